"""The error a bad setting raises, and the hints it gives."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and what to do.

    `keys` are the settings it is about: the message has {0}, {1}, ... where it names them, so that the command line
    can name each as the flag the user typed (`message`); elsewhere each is named as a config key.
    """

    def __init__(self, message: str, *keys: str) -> None:
        self.template, self.keys = message, keys
        super().__init__(self.message())

    def message(self, names: Mapping[str, str] | None = None) -> str:
        """The message, each key named as `names` spells it (a flag the user typed), else as `config key 'KEY'`."""
        if not self.keys:
            return self.template
        names = names or {}
        return self.template.format(*(names.get(k) or f"config key '{k}'" for k in self.keys))


def _shown(value: object) -> str:
    """A value's repr, safe inside a ConfigError's message (whose braces name keys)."""
    return repr(value).replace("{", "{{").replace("}", "}}")


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """' (did you mean X?)' for the known word closest to a misspelt one, or '' where none is close."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_keys(what: str, unknown: Sequence[str], known: Iterable[str], where: str = "") -> ConfigError:
    """The error for unknown keys (`what`: 'config key', 'setting') `where` (' in TABLE'), each with the known key
    closest to it."""
    known = sorted(known)
    hints = [f"'{k}'{did_you_mean(k, known)}" for k in unknown]
    text = f"unknown {what}{'s' if len(unknown) > 1 else ''} {', '.join(hints)}{where}"
    if not all(h.endswith("?)") for h in hints):
        text += f"; known: {', '.join(known)}"
    return ConfigError(text.replace("{", "{{").replace("}", "}}"))
