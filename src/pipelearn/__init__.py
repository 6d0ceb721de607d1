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

from pipelearn.api import Metrics, configure, join, run, serve, train_local
from pipelearn.config import ConfigError, RunConfig, load_toml
from pipelearn.data import Dataset, DatasetFactory, DataSplits, load_dataset, save_dataset
from pipelearn.models import ModelError, ModelFactory, build_model, split
from pipelearn.plugins import PluginError

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
