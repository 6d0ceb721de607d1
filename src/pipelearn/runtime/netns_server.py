"""The server of a `--netns` run: a process of its own in the server's namespace, started by the launcher.

It reads the run's configuration (JSON) on stdin and writes one JSON object a line on stdout: the port it listens
on, the clock reading at which training starts (the origin of the rate schedules), and the metrics at the end, or
the error that stopped it. Anything else it prints goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

import torch

from pipelearn.config import ConfigError, RunConfig
from pipelearn.logs import setup_logging


def _say(channel: TextIO, **message: Any) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def main() -> int:
    """Serve one run on ADDRESS (any free port), reporting to the launcher on stdout."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True, help="the server's address in its namespace")
    parser.add_argument("--credentials", required=True, metavar="DIR", help="the run's credentials (mutual TLS)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--resume", action="store_true", help="go on from the checkpoint in the run's output directory")
    args = parser.parse_args()
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not garble the launcher's messages
    setup_logging()
    from pipelearn.runtime.checkpoint import load_checkpoint
    from pipelearn.runtime.server import Server
    from pipelearn.runtime.setup import prepare
    from pipelearn.transport.credentials import load_server_credentials

    try:
        config = RunConfig.from_json(sys.stdin.read())
        torch.set_num_threads(config.threads)
        resume = load_checkpoint(config.out) if args.resume else None
        server = Server(prepare(config, resume=resume), progress=not args.quiet, resume=resume)
        _say(channel, port=server.listen(f"{args.address}:0", load_server_credentials(args.credentials)))
        server.on_start = lambda clock: _say(channel, start=clock)
        _say(channel, metrics=server.run())
    except (ConfigError, ValueError, OSError) as exc:
        _say(channel, error=str(exc), kind="config")
        return 2
    except RuntimeError as exc:
        _say(channel, error=str(exc), kind="runtime")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
