"""Plug-ins: a user's own model or data set, named MODULE:FUNCTION or FILE.py:FUNCTION.

A process imports a plug-in only because its own command line, configuration or Python caller names it, never
because a message said so (see pipelearn.runtime.agreement for how a device and the server agree on them).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any


class PluginError(ValueError):
    """A plug-in cannot be used: it does not import, is missing, or returns the wrong thing; the text says which."""


_loading_files: list[Path] = []
"""The plug-in files being imported right now (for the error when one starts a run at import time)."""


def is_plugin(name: str) -> bool:
    """Whether a model or data set name is a plug-in (MODULE:FUNCTION) rather than a built-in name."""
    return isinstance(name, str) and ":" in name


def parse(spec: str) -> tuple[str, str]:
    """Split MODULE:FUNCTION (or FILE.py:FUNCTION) into its module or file and its function's dotted name."""
    target, _, function = spec.rpartition(":")
    parts = function.split(".")
    if not target.strip() or not all(p.isidentifier() for p in parts):
        raise PluginError(
            f"plug-in {spec!r} is not MODULE:FUNCTION or FILE.py:FUNCTION (e.g. my_nets:small_cnn or "
            "nets/my_nets.py:small_cnn)"
        )
    return target.strip(), function


def is_file(target: str) -> bool:
    """Whether a plug-in's module part names a file rather than an importable module."""
    return target.endswith(".py") or "/" in target or os.sep in target


def load(spec: str, what: str) -> Callable[..., Any]:
    """The function a plug-in names, imported into this process; PluginError says what is wrong if it cannot."""
    target, function = parse(spec)
    module = _import_file(Path(target), spec, what) if is_file(target) else _import_module(target, spec, what)
    value: Any = module
    for part in function.split("."):
        if not hasattr(value, part):
            public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            raise PluginError(
                f"{what} plug-in {spec!r}: {target} has no {function!r}; its functions: {', '.join(public) or 'none'}"
            )
        value = getattr(value, part)
    if not callable(value):
        raise PluginError(f"{what} plug-in {spec!r}: {function!r} is a {type(value).__name__}, not a function")
    return value


def _import_module(name: str, spec: str, what: str) -> ModuleType:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m` would; last, so that it shadows no installed module
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise PluginError(
                f"{what} plug-in {spec!r}: no module named {name!r} on this process's path; install it, add its "
                "directory to PYTHONPATH, or name its file instead (FILE.py:FUNCTION)"
            ) from exc
        raise PluginError(f"{what} plug-in {spec!r}: module {name!r} failed to import: {exc}") from exc
    except Exception as exc:
        raise PluginError(
            f"{what} plug-in {spec!r}: module {name!r} failed to import: {type(exc).__name__}: {exc}"
        ) from exc


def _import_file(path: Path, spec: str, what: str) -> ModuleType:
    path = path.expanduser().resolve()
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main is not None and main_file is not None and Path(main_file).resolve() == path:
        return main  # the script that is running: the same functions, not a second copy
    if not path.is_file():
        raise PluginError(f"{what} plug-in {spec!r}: the file {path} does not exist")
    name = f"pipelearn_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise PluginError(f"{what} plug-in {spec!r}: {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # as when the file runs as a script: its neighbours import
    _loading_files.append(path)
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise PluginError(f"{what} plug-in {spec!r}: {path} failed to import: {type(exc).__name__}: {exc}") from exc
    finally:
        _loading_files.pop()
    return module


def refuse_run_while_importing() -> None:
    """Raise if a plug-in file is being imported: a script must start its run under `if __name__ == "__main__":`."""
    if _loading_files:
        raise PluginError(
            f"{_loading_files[-1]} starts a run when it is imported as a plug-in; put the call that starts the run "
            'under `if __name__ == "__main__":` so that device processes can import its functions'
        )


def spec_for(value: str | Callable[..., Any], what: str) -> str:
    """The plug-in name by which other processes import `value` (a function), or `value` itself if a name."""
    if isinstance(value, str):
        return value
    if hasattr(value, "state_dict"):
        raise PluginError(
            f"the {what} is a built {type(value).__name__}; pass the function that builds it instead: every process "
            "builds its own copy from the run's seed (nothing is pickled)"
        )
    if not callable(value):
        raise PluginError(f"the {what} must be a name or a function, not a {type(value).__name__}")
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", "")
    if module is None or not qualname or "<" in qualname:
        raise PluginError(
            f"the {what} function {qualname or value!r} is a lambda or defined inside another function; device "
            "processes import it by name, so define it at the top level of a module"
        )
    if module == "__main__":
        main_file = getattr(sys.modules["__main__"], "__file__", None)
        if main_file is None:
            raise PluginError(
                f"the {what} function {qualname!r} was defined in an interactive session (a notebook or the REPL), "
                "which device processes cannot import: put it in a .py file (in a notebook: %%writefile my_nets.py) "
                "and import it from there"
            )
        spec = f"{Path(main_file).resolve()}:{qualname}"
    else:
        spec = f"{module}:{qualname}"
    if load(spec, what) is not value:
        raise PluginError(f"the {what} function {qualname!r} is not what {spec} names when imported; pass a name")
    return spec


def same(a: str, b: str) -> bool:
    """Whether two plug-in names name the same function (for files: the same file name; directories may differ)."""
    (target_a, function_a), (target_b, function_b) = parse(a), parse(b)
    if function_a != function_b:
        return False
    if is_file(target_a) and is_file(target_b):
        return Path(target_a).name == Path(target_b).name
    return target_a == target_b


def device_flags(model: str, dataset: str) -> list[str]:
    """The `pipelearn device` flags that name a run's plug-ins, for a device process this machine starts."""
    flags = []
    if is_plugin(model):
        flags += ["--model", model]
    if is_plugin(dataset):
        flags += ["--dataset", dataset]
    return flags


def device_environment(model: str, dataset: str) -> dict[str, str] | None:
    """The environment of a device process this machine starts: where plug-ins are used, this process's module path.

    A plug-in importable here (a module beside a script or a notebook, say) is then importable there too.
    """
    if not (is_plugin(model) or is_plugin(dataset)):
        return None
    path = [p or os.getcwd() for p in sys.path]
    inherited = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*path, *([inherited] if inherited else [])])}
