"""One log for every process: plain lines where stderr is no terminal, lines never glued onto a progress bar, a log
file, and gRPC's native log kept off unless asked for."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelearn.logs import progress_bar, setup_logging


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    setup_logging()  # back to stderr for the tests after


def _run_like(stream: io.StringIO) -> None:
    """What a server's progress does: a bar that advances, its postfix changing, messages logged between."""
    log = logging.getLogger("pipelearn.server")
    with progress_bar(total=40, desc="pipelearn server", unit="action", stream=stream, log=log) as bar:
        for i in range(40):
            bar.update()
            bar.set_postfix_str(f"round {i // 10}")
            if i == 17:
                log.warning("device 1 is late")
    log.info("done")


def test_a_stream_that_is_no_terminal_gets_plain_lines_without_carriage_returns(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging(stream=stream)
    _run_like(stream)
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert "server: warning: device 1 is late" in lines and lines[-1] == "server: done"
    progress = [line for line in lines if line.startswith("server: pipelearn server: ")]
    assert progress[0] == "server: pipelearn server: 4/40 action (round 0)"  # every tenth of the way
    assert progress[-1] == "server: pipelearn server: 40/40 action (round 3)" and len(progress) == 10


def test_on_a_terminal_messages_go_through_the_bars_writer_onto_lines_of_their_own(restore_logging: None) -> None:
    stream = _Terminal()
    setup_logging(stream=stream)
    _run_like(stream)
    frames = stream.getvalue().replace("\r", "\n").splitlines()
    assert "server: warning: device 1 is late" in frames  # a whole line: not glued onto the bar's
    assert any("pipelearn server:" in f and "40/40" in f for f in frames)


def test_a_disabled_bar_writes_nothing_and_iterates(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging(stream=stream)
    assert list(progress_bar(range(3), enabled=False, stream=stream)) == [0, 1, 2]
    assert list(progress_bar(range(3), desc="epoch 1", stream=stream)) == [0, 1, 2]
    assert stream.getvalue().splitlines() == [f"pipelearn: epoch 1: {n}/3 it" for n in (1, 2, 3)]


def test_the_log_file_gets_every_line_with_its_time(tmp_path: Path, restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging(str(tmp_path / "run.log"), stream=stream)
    logging.getLogger("pipelearn.device").warning("the server is slow")
    logging.getLogger("pipelearn.config").info("read run.toml")
    setup_logging(stream=stream)  # again: the file is closed, the console handler replaced, not doubled
    logging.getLogger("pipelearn").error("bad")
    written = (tmp_path / "run.log").read_text().splitlines()
    assert len(written) == 2 and written[0].endswith("WARNING pipelearn.device: the server is slow")
    assert stream.getvalue().splitlines() == [
        "device: warning: the server is slow",
        "pipelearn: read run.toml",
        "pipelearn: error: bad",
    ]


_HANDSHAKE = """
    import sys, time
    from concurrent import futures
    import pipelearn  # first, as every pipelearn process
    import grpc
    from pipelearn.transport.credentials import load_server_credentials, make_credentials

    make_credentials(sys.argv[1], 1)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    port = server.add_secure_port("127.0.0.1:0", load_server_credentials(sys.argv[1]).grpc())
    server.start()
    try:  # plain text to a TLS port: the server's handshake fails
        grpc.channel_ready_future(grpc.insecure_channel(f"127.0.0.1:{port}")).result(timeout=1)
    except grpc.FutureTimeoutError:
        pass
    server.stop(0)
"""


@pytest.mark.slow
def test_grpcs_native_log_is_off_unless_the_environment_asks_for_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GRPC_VERBOSITY", "GRPC_TRACE")}
    script = textwrap.dedent(_HANDSHAKE)
    quiet = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "a")], env=env, capture_output=True, text=True, timeout=60
    )
    assert quiet.returncode == 0 and "Handshake failed" not in quiet.stderr, quiet.stderr
    asked = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "b")],
        env={**env, "GRPC_VERBOSITY": "INFO"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Handshake failed" in asked.stderr  # the user's own setting is kept
