"""PipeLearn: pipeline-parallel collaborative machine learning across devices and a server."""

__version__ = "0.1.0"
