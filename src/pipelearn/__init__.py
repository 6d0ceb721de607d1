"""PipeLearn: pipeline-parallel collaborative machine learning across devices and a server.

In Python (a notebook, a script)::

    import pipelearn

    config = pipelearn.RunConfig(mode="pipelearn", devices=2, epochs=1, samples_per_device=300)
    metrics = pipelearn.run(config, model="my_nets:small_cnn")  # or the function itself, or a zoo name
    metrics["test_accuracy"], metrics["epoch_times_s"]

`run` trains with local device processes; `serve` and `join` run the server and the devices on different machines;
`train_local` is the single-process baseline. A model is a pipelearn.ModelFactory, a data set a
pipelearn.DatasetFactory or a pair of pipelearn.Dataset objects.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipelearn.logs import quiet_grpc

__version__ = "0.1.0"

quiet_grpc()  # every pipelearn process imports this first, before anything imports grpc

_PUBLIC = {
    "Metrics": "pipelearn.api",
    "configure": "pipelearn.api",
    "join": "pipelearn.api",
    "run": "pipelearn.api",
    "serve": "pipelearn.api",
    "train_local": "pipelearn.api",
    "ConfigError": "pipelearn.config",
    "RunConfig": "pipelearn.config",
    "load_toml": "pipelearn.config",
    "Dataset": "pipelearn.data",
    "DatasetFactory": "pipelearn.data",
    "DataSplits": "pipelearn.data",
    "load_dataset": "pipelearn.data",
    "save_dataset": "pipelearn.data",
    "ModelError": "pipelearn.models",
    "ModelFactory": "pipelearn.models",
    "build_model": "pipelearn.models",
    "split": "pipelearn.models",
    "PluginError": "pipelearn.plugins",
}
"""Each public name and the module it comes from, imported on first use (PEP 562): `import pipelearn` and the
command line's --help load neither torch nor grpc."""

__all__ = [
    "ConfigError",
    "DataSplits",
    "Dataset",
    "DatasetFactory",
    "Metrics",
    "ModelError",
    "ModelFactory",
    "PluginError",
    "RunConfig",
    "__version__",
    "build_model",
    "configure",
    "join",
    "load_dataset",
    "load_toml",
    "run",
    "save_dataset",
    "serve",
    "split",
    "train_local",
]

if TYPE_CHECKING:
    from pipelearn.api import Metrics, configure, join, run, serve, train_local
    from pipelearn.config import ConfigError, RunConfig, load_toml
    from pipelearn.data import Dataset, DatasetFactory, DataSplits, load_dataset, save_dataset
    from pipelearn.models import ModelError, ModelFactory, build_model, split
    from pipelearn.plugins import PluginError


def __getattr__(name: str) -> Any:
    """A public name, imported from its module when first asked for."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'pipelearn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names with the module's own."""
    return sorted({*globals(), *_PUBLIC})
