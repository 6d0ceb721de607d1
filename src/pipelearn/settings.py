"""Every setting described once: the command line's flags, their help and the README's flag table are made from the
fields of a settings dataclass (RunConfig, LogSettings): each flag is its field's name with dashes, its help is the
field's docstring with its unit and default, its values are parsed by the field's type.

`python -m pipelearn.settings README.md` writes the generated flag table into the README, between its markers.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import itertools
import math
import sys
import textwrap
import types
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from pipelearn.config import RunConfig

BEGIN, END = "<!-- flags:begin -->", "<!-- flags:end -->"
"""The README's markers around the generated flag table."""
RENAMED_FLAGS: dict[str, str] = {"--timeout": "timeout_s", "--heartbeat": "heartbeat_s", "--liveness": "liveness_s"}
"""Old spellings of run settings' flags, still read (with a warning): the field each sets."""
_TYPED, _DEPRECATED = "_typed_flags", "_deprecated_flags"


@dataclass(frozen=True)
class Setting:
    """One field of a settings dataclass as the command line and the README show it."""

    name: str
    """The field's name: the TOML key and the Python keyword."""
    default: Any
    description: str
    """The field's docstring, on one line."""
    unit: str
    metavar: str
    choices: tuple[str, ...]
    parse: Callable[[str], Any] | None
    """Reads a flag's value; None for a switch (true or false), and for a setting without a flag."""
    switch: bool

    @property
    def flag(self) -> str:
        """The command-line flag: the name with dashes."""
        return "--" + self.name.replace("_", "-")

    @property
    def has_flag(self) -> bool:
        """Whether the command line can give it (per-device tables are TOML only)."""
        return self.switch or self.parse is not None or bool(self.choices)

    def help(self, default: str | None = None) -> str:
        """The flag's help: the description, then its unit and its default (`default`, where a command has its own)."""
        unit = f" Unit: {self.unit}." if self.unit else ""
        return f"{self.description}{unit} Default: {default or shown(self.default)}.".replace("%", "%%")


def shown(value: Any) -> str:
    """A default as a person reads it: none, true, 1x28x28, inf, 0.01."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    if isinstance(value, dict):
        return "none"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:g}"
    return str(value)


@functools.cache
def settings(cls: type = RunConfig) -> tuple[Setting, ...]:
    """The settings of a dataclass, in field order, from its fields, types, defaults, metadata and docstrings."""
    docs, hints = docstrings(cls), get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name not in docs:
            raise TypeError(f"{cls.__name__}.{f.name} has no docstring: every setting needs its description")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        choices, parse = _reader(hints[f.name])
        out.append(
            Setting(
                name=f.name,
                default=default,
                description=docs[f.name],
                unit=f.metadata.get("unit", ""),
                metavar=f.metadata.get("metavar", ""),
                choices=f.metadata.get("choices") or choices,
                parse=parse,
                switch=hints[f.name] is bool,
            )
        )
    return tuple(out)


def docstrings(cls: type) -> dict[str, str]:
    """The docstring under each field of a class (the string after its annotated assignment), each on one line."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)).body
    docs = {}
    for field, doc in itertools.pairwise(body):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(doc, ast.Expr)
            and isinstance(doc.value, ast.Constant)
            and isinstance(doc.value.value, str)
        ):
            docs[field.target.id] = " ".join(doc.value.value.split())
    return docs


def _reader(hint: Any) -> tuple[tuple[str, ...], Callable[[str], Any] | None]:
    """The words a flag may take, and how to read any other value, from a field's type."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return tuple(map(str, args)), None
    if origin in (Union, types.UnionType):
        words = tuple(str(v) for a in args if get_origin(a) is Literal for v in get_args(a))
        others = [a for a in args if get_origin(a) is not Literal and a is not type(None)]
        if not others:
            return words, None
        (other,) = others
        inner = _reader(other)[1]
        return (), inner if not words or inner is None else _or_words(inner, words)
    if hint is int:
        return (), _whole
    if hint is float:
        return (), _number
    if hint is str:
        return (), str
    if origin is tuple:
        return (), _shape
    if origin is list:
        return (), _schedule
    return (), None  # a table (device_overrides): TOML only


def _or_words(read: Callable[[str], Any], words: tuple[str, ...]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if text in words:
            return text
        try:
            return read(text)
        except argparse.ArgumentTypeError:
            either = " or ".join(f"'{w}'" for w in words)
            kind = "a whole number" if read is _whole else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind} or {either}, got {text!r}") from None

    return parse


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x32x32, got {text!r}") from None


def _schedule(text: str) -> list[list[float]]:
    try:
        return [[float(t), float(mbps)] for t, mbps in (step.split(":") for step in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected SECONDS:MBPS steps separated by commas (0:10,30:2,60:10), got {text!r}"
        ) from None


class _Store(argparse.Action):
    """Stores a setting's value and remembers the flag it was given by, for messages that name it."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)
        vars(namespace).setdefault(_TYPED, {})[self.dest] = option_string


class _Switch(argparse.BooleanOptionalAction):
    """--NAME and --no-NAME, remembering which was given."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        super().__call__(parser, namespace, values, option_string)
        vars(namespace).setdefault(_TYPED, {})[self.dest] = option_string


class RenamedFlag(_Store):
    """An old spelling of a flag: stores as the new one does, and notes a warning to give."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        super().__call__(parser, namespace, values, option_string)
        new = "--" + self.dest.replace("_", "-")
        vars(namespace).setdefault(_DEPRECATED, []).append(f"{option_string} is now {new}; the old name will go")


def add_flags(
    parser: argparse.ArgumentParser,
    cls: type = RunConfig,
    *,
    only: Collection[str] | None = None,
    leave_out: Collection[str] = (),
    hidden: Collection[str] = (),
    defaults: Mapping[str, str] | None = None,
    renamed: Mapping[str, str] | None = None,
) -> None:
    """Add the flags of `cls`'s settings (those in `only`, less `leave_out`; `hidden` ones parse but are not in
    --help) to `parser`, each defaulting to None (not given); `defaults` are the help's defaults where a command has
    its own; `renamed` maps old flags to the settings they still set (default: RENAMED_FLAGS)."""
    renamed = RENAMED_FLAGS if renamed is None else renamed
    for s in settings(cls):
        if not s.has_flag or s.name in leave_out or (only is not None and s.name not in only):
            continue
        shown_help = argparse.SUPPRESS if s.name in hidden else s.help((defaults or {}).get(s.name))
        if s.switch:
            parser.add_argument(s.flag, dest=s.name, action=_Switch, default=None, help=shown_help)
            continue
        kwargs: dict[str, Any] = {"dest": s.name, "default": None, "help": shown_help}
        kwargs |= {"choices": s.choices} if s.choices else {}
        kwargs |= {"type": s.parse} if s.parse is not None else {}
        kwargs |= {"metavar": s.metavar} if s.metavar else {}
        parser.add_argument(s.flag, action=_Store, **kwargs)
        for old in (o for o, name in renamed.items() if name == s.name):
            parser.add_argument(old, action=RenamedFlag, **{**kwargs, "help": argparse.SUPPRESS})


def typed_flags(args: argparse.Namespace) -> dict[str, str]:
    """The flag each setting given on the command line was typed as, by setting name."""
    return dict(vars(args).get(_TYPED, {}))


def deprecations(args: argparse.Namespace) -> list[str]:
    """A warning for each old flag spelling the command line used."""
    return list(vars(args).get(_DEPRECATED, []))


def flag_table(cls: type = RunConfig) -> str:
    """The Markdown table of every setting of `cls`: flag, TOML key, default and description with its unit."""
    rows = ["| flag | TOML key | default | description |", "|---|---|---|---|"]
    for s in settings(cls):
        if s.switch:
            flag = f"`{s.flag}`, `--no-{s.flag[2:]}`"
        elif s.has_flag:
            flag = f"`{s.flag} {s.metavar or _choices(s)}`"
        else:
            flag = "(TOML only)"
        unit = f" Unit: {s.unit}." if s.unit else ""
        cells = [flag, f"`{s.name}`", f"`{shown(s.default)}`", s.description + unit]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def _choices(s: Setting) -> str:
    return "|".join(s.choices) if s.choices else "VALUE"


def readme_block() -> str:
    """What the README holds between its flag markers: a line saying where the table comes from, and the table."""
    intro = (
        "Every run setting, generated from `RunConfig`'s fields (`python -m pipelearn.settings README.md` writes it "
        "again): a flag overrides the TOML key of a `CONFIG.toml`, which overrides the default."
    )
    return f"{BEGIN}\n{intro}\n\n{flag_table()}\n{END}"


def with_readme_block(text: str) -> str:
    """A README's text with the generated flag table between its markers."""
    begin, end = text.find(BEGIN), text.find(END)
    if begin < 0 or end < begin:
        raise ValueError(f"the README has no {BEGIN} ... {END} block for the flag table")
    return text[:begin] + readme_block() + text[end + len(END) :]


def main(argv: Iterable[str] | None = None) -> int:
    """Write the generated flag table into the README files named on the command line."""
    paths = list(sys.argv[1:] if argv is None else argv) or ["README.md"]
    for path in map(Path, paths):
        path.write_text(with_readme_block(path.read_text()))
        print(f"wrote the flag table into {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
