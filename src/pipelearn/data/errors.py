"""Errors raised when a data set cannot be found, downloaded or read."""


class DatasetError(ValueError):
    """A data set is unknown, or one of its files is missing, corrupt or inconsistent."""
