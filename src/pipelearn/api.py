"""The Python API: configure a run, train it with your own model and data, and get its metrics back.

Devices are separate processes (`python -m pipelearn device`), and they get what you pass by name or as data, never
as pickles: a model or data function by its import name (MODULE:FUNCTION, or FILE.py:FUNCTION for the running
script), Dataset objects as safetensors files in a private temporary directory. The command line is a thin layer
over these functions, so a run started here is the run `pipelearn run` would make of the same settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from pipelearn.config import ConfigError, RunConfig, unknown_keys
from pipelearn.data import Dataset, save_dataset
from pipelearn.plugins import refuse_run_while_importing, spec_for
from pipelearn.runtime.checkpoint import Checkpoint
from pipelearn.transport.credentials import DeviceCredentials, ServerCredentials

Metrics = dict[str, Any]
"""What metrics.json holds: times, busy and idle seconds, bytes, losses, test accuracy and the configuration."""

ModelArg = str | Callable[..., Any] | None
"""A zoo model name, a plug-in name, or a model function (a pipelearn.models.ModelFactory)."""
DatasetArg = str | Callable[..., Any] | None
"""A data set name, a plug-in name, or a data function (a pipelearn.data.DatasetFactory)."""


def configure(config: RunConfig | None = None, **settings: Any) -> RunConfig:
    """`config` (default: RunConfig()) with `settings` (RunConfig fields) replaced, validated."""
    base = config if config is not None else RunConfig()
    known = [f.name for f in dataclasses.fields(RunConfig)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise unknown_keys("setting", unknown, known)
    return dataclasses.replace(base, **settings).validate()


def run(
    config: RunConfig | None = None,
    *,
    model: ModelArg = None,
    dataset: DatasetArg = None,
    train: Dataset | None = None,
    test: Dataset | None = None,
    progress: bool = False,
    resume: Checkpoint | None = None,
    **settings: Any,
) -> Metrics:
    """Train with the server in this process and each device a local process (or each an actor on a Ray cluster,
    launcher ray); return the metrics.

    `model` and `dataset` override the configuration's; `train` and `test` (given together, instead of `dataset`)
    are the data set itself. The results are also written to `config.out`. Prints nothing unless `progress`.
    `resume` continues a run from its checkpoint (`pipelearn.runtime.checkpoint.load_checkpoint`).
    """
    refuse_run_while_importing()
    config = _named(configure(config, **settings), model, dataset)
    if config.launcher == "ray":
        from pipelearn.runtime.ray_launch import run_ray as launch
    else:
        from pipelearn.runtime.launch import run_local as launch

    if train is None and test is None:
        return launch(config, progress=progress, resume=resume)
    with _saved(config, train, test, dataset) as saved:
        return launch(saved, progress=progress, resume=resume)


def serve(
    config: RunConfig | None = None,
    listen: str = "0.0.0.0:50051",
    *,
    model: ModelArg = None,
    dataset: DatasetArg = None,
    progress: bool = False,
    resume: Checkpoint | None = None,
    credentials: ServerCredentials | None = None,
    insecure: bool = False,
    **settings: Any,
) -> Metrics:
    """Serve a run on HOST:PORT to devices started elsewhere (`join`); return the metrics when it is over.

    Devices connect over mutual TLS with `credentials` (`pipelearn credentials`), or in plain text where `insecure`.
    """
    from pipelearn.runtime.server import serve as serve_run

    refuse_run_while_importing()
    if (credentials is None) != insecure:
        raise ConfigError("serve needs credentials (mutual TLS) or insecure=True (plain text), and not both")
    config = _named(configure(config, **settings), model, dataset)
    return serve_run(config, listen, credentials, progress=progress, resume=resume)


def join(
    server: str,
    device: int,
    *,
    model: ModelArg = None,
    dataset: DatasetArg = None,
    compute: str = "cpu",
    timeout_s: float = 120.0,
    credentials: DeviceCredentials | None = None,
    insecure: bool = False,
    data_dir: str | None = None,
    download: bool = False,
    state_dir: str | None = None,
) -> None:
    """Take part in the run served at HOST:PORT as device `device`, training on `compute`, until it is over.

    Where the run uses plug-ins, give the same `model` and `dataset` as the server: a device imports only code
    that its own caller names, and the server refuses a device whose model part differs from its own. The device
    connects with its `credentials` (mutual TLS), or in plain text only where `insecure`; it reads its data from its
    own `data_dir`, never from a directory the server names. It keeps its optimizer state in its own `state_dir`
    (each round's, the last three), so that it rejoins, or a resumed run goes on, with the momentum it had.
    """
    from pipelearn.runtime.joining import run_device

    run_device(
        server,
        device,
        timeout_s,
        model=None if model is None else spec_for(model, "model"),
        dataset=None if dataset is None else spec_for(dataset, "data set"),
        compute=compute,
        credentials=credentials,
        insecure=insecure,
        data_dir=data_dir,
        download=download,
        state_dir=state_dir,
    )


def train_local(
    config: RunConfig | None = None,
    *,
    model: ModelArg = None,
    dataset: DatasetArg = None,
    train: Dataset | None = None,
    test: Dataset | None = None,
    progress: bool = False,
    **settings: Any,
) -> Metrics:
    """Train the whole model in this one process (the baseline every mode is held against); return the metrics."""
    from pipelearn.trainer import train_local as train_whole

    config = _named(configure(config, **settings), model, dataset)
    if train is None and test is None:
        return train_whole(config, progress=progress)
    with _saved(config, train, test, dataset) as saved:
        return train_whole(saved, progress=progress)


def _named(config: RunConfig, model: ModelArg, dataset: DatasetArg) -> RunConfig:
    if model is not None:
        config = dataclasses.replace(config, model=spec_for(model, "model"))
    if dataset is not None:
        config = dataclasses.replace(config, dataset=spec_for(dataset, "data set"))
    return config.validate()


@contextlib.contextmanager
def _saved(config: RunConfig, train: Dataset | None, test: Dataset | None, dataset: DatasetArg) -> Iterator[RunConfig]:
    """The configuration with `train` and `test` saved where the devices read them, for as long as the run lasts."""
    if not isinstance(train, Dataset) or not isinstance(test, Dataset):
        raise ConfigError(
            "pass train and test together, each a pipelearn.data.Dataset (uint8 images (N, C, H, W), int64 labels), "
            f"not {type(train).__name__} and {type(test).__name__}"
        )
    if dataset is not None:
        raise ConfigError("pass either dataset or train and test, not both")
    with tempfile.TemporaryDirectory(prefix="pipelearn-data-") as directory:
        save_dataset(directory, train, test)
        yield dataclasses.replace(config, dataset="saved", data_dir=directory)
