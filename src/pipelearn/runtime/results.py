"""What a finished server writes: the final model's accuracy and the run's metrics, trace and model files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelearn.metrics.results import write_results
from pipelearn.models.parts import make_model
from pipelearn.training import evaluate

if TYPE_CHECKING:
    from pipelearn.runtime.server import Server


def write_run_results(server: Server, start: float, end: float) -> dict[str, Any]:
    """Evaluate the server's final model and write the run's results into its output directory; return the
    metrics."""
    config, test = server.config, server.test
    final = server.aggregator.final_state()
    model = make_model(config, test.input_shape, test.num_classes)
    model.load_state_dict(final)
    accuracy = evaluate(model, test, config.test_samples, config.seed)
    bytes_up, bytes_down = server.bytes_so_far()
    return write_results(
        Path(config.out),
        config,
        server.recorder.events,
        start,
        end,
        accuracy,
        final,
        plan=server.plan,
        samples=server.samples,
        bytes_up=bytes_up,
        bytes_down=bytes_down,
        compression=[server.channels[d].usage() for d in range(config.devices)],
        errors=server.errors,
        startup_s={"server": server.startup_s, "devices": server.device_startup_s},
        extra={
            **server.rounds.metrics(server.recorder.events, accuracy),
            "adapt": server.adapter is not None,
            "replans": [r.to_dict() for r in server.replans],
        },
        server_device=str(server.torch_device),
        dropped=server.membership.dropped,
        rejoined=server.membership.rejoined,
        resumed_from_round=server.resume.rounds_done if server.resume is not None else None,
    )
