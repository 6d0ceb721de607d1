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

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelearn.api import Metrics, configure, join, run, serve, train_local
    from pipelearn.config import ConfigError, RunConfig, load_toml
    from pipelearn.data import Dataset, DatasetFactory, DataSplits, load_dataset, save_dataset
    from pipelearn.models import ModelError, ModelFactory, build_model, split
    from pipelearn.plugins import PluginError

_HOMES = {
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
"""Where each public name lives: imported on first use, so that `import pipelearn.schedule` (or `pipelearn --help`)
does not load torch."""


def __getattr__(name: str) -> Any:
    """The public name `name`, imported from its module on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module 'pipelearn' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


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
