"""Chrome trace-event export (opens in Perfetto or chrome://tracing): one track per resource."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pipelearn.metrics.events import Event


def trace_events(events: Sequence[Event], origin: float) -> list[dict[str, object]]:
    """Complete ('X') events in microseconds from `origin`, a process per device and one for the server."""
    tracks = sorted({e.track for e in events}, key=_track_order)
    processes = sorted({t.split("/")[0] for t in tracks}, key=_track_order)
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
    return out


def write_trace(events: Sequence[Event], path: Path, origin: float) -> None:
    """Write a Chrome trace-event JSON file."""
    path.write_text(json.dumps({"traceEvents": trace_events(events, origin), "displayTimeUnit": "ms"}))


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
