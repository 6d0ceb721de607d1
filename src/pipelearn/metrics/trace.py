"""Chrome trace-event export (opens in Perfetto or chrome://tracing): one track per resource, link rates as counters."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipelearn.config import RateSteps
from pipelearn.events import Event


def trace_events(
    events: Sequence[Event],
    origin: float,
    rates: Mapping[str, RateSteps] | None = None,
    end: float | None = None,
) -> list[dict[str, object]]:
    """Complete ('X') events in microseconds from `origin`, a process per device and one for the server.

    `rates` maps a link's track to its rate over time (seconds from `origin`, Mbit/s); each finite rate becomes a
    counter ('C') event in the link's process, up to `end`, where the last rate is repeated.
    """
    rates = rates or {}
    tracks = sorted({e.track for e in events}, key=_track_order)
    processes = sorted({t.split("/")[0] for t in [*tracks, *rates]}, key=_track_order)
    pid = {p: i for i, p in enumerate(processes)}
    tid = {t: i for i, t in enumerate(tracks)}
    out: list[dict[str, object]] = []
    for p in processes:
        out.append({"ph": "M", "name": "process_name", "pid": pid[p], "args": {"name": p}})
    for t in tracks:
        out.append(
            {
                "ph": "M",
                "name": "thread_name",
                "pid": pid[t.split("/")[0]],
                "tid": tid[t],
                "args": {"name": t.split("/")[1]},
            }
        )
    for e in events:
        out.append(
            {
                "ph": "X",
                "name": e.name,
                "cat": e.track.split("/")[1],
                "pid": pid[e.track.split("/")[0]],
                "tid": tid[e.track],
                "ts": (e.start - origin) * 1e6,
                "dur": max(e.duration, 0.0) * 1e6,
                "args": e.args,
            }
        )
    for track, steps in rates.items():
        out.extend(_rate_counters(track, steps, pid[track.split("/")[0]], None if end is None else end - origin))
    return out


def _rate_counters(track: str, steps: RateSteps, pid: int, until_s: float | None) -> list[dict[str, object]]:
    shown = [(t, mbps) for t, mbps in steps if until_s is None or t <= until_s]
    if until_s is not None and shown:
        shown.append((until_s, shown[-1][1]))
    name = f"{track.split('/')[1]} Mbit/s"
    return [
        {"ph": "C", "name": name, "cat": "rate", "pid": pid, "ts": t * 1e6, "args": {"Mbit/s": mbps}}
        for t, mbps in shown
        if math.isfinite(mbps)  # an unlimited link has no rate to draw, and JSON has no infinity
    ]


def write_trace(
    events: Sequence[Event],
    path: Path,
    origin: float,
    rates: Mapping[str, RateSteps] | None = None,
    end: float | None = None,
) -> None:
    """Write a Chrome trace-event JSON file."""
    trace = {"traceEvents": trace_events(events, origin, rates, end), "displayTimeUnit": "ms"}
    path.write_text(json.dumps(trace))


def _track_order(name: str) -> tuple[int, str]:
    return (0, name) if name.startswith("server") else (1, name)


def read_trace(path: Path) -> list[Event]:
    """The events of a trace written by `write_trace`, in seconds from its origin."""
    try:
        items = json.loads(path.read_text())["traceEvents"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path} is not a trace written by pipelearn ({exc}); run the training again") from exc
    processes = {e["pid"]: e["args"]["name"] for e in items if e.get("ph") == "M" and e["name"] == "process_name"}
    threads = {e["tid"]: e["args"]["name"] for e in items if e.get("ph") == "M" and e["name"] == "thread_name"}
    events = []
    for e in items:
        if e.get("ph") == "X":
            track = f"{processes[e['pid']]}/{threads[e['tid']]}"
            events.append(Event(track, e["name"], e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6, e.get("args", {})))
    return events
