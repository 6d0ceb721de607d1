"""Tests for credentials: the files and their modes, ids bound to certificates, and mutual TLS over real gRPC."""

from __future__ import annotations

import ipaddress
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.credentials import (
    CredentialsError,
    certificate_device,
    device_file,
    is_loopback,
    load_device_credentials,
    load_server_credentials,
    make_credentials,
    peer_device,
)
from pipelearn.transport.inbox import Inbox
from pipelearn.transport.link import Outbox
from pipelearn.transport.service import envelope, open_session, start_server


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys") / "run"
    make_credentials(directory, 3, hosts=["trainer.example", "192.0.2.9"], ips=["2001:db8::1"])
    return directory


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_their_modes(keys: Path) -> None:
    assert sorted(p.name for p in keys.iterdir()) == sorted(
        ["ca.pem", "server.pem", "server.key", "device-0.pem", "device-1.pem", "device-2.pem"]
    )
    assert _mode(keys) == 0o700
    for private in ("server.key", "device-0.pem", "device-1.pem", "device-2.pem"):
        assert _mode(keys / private) == 0o600
    assert b"PRIVATE KEY" not in (keys / "ca.pem").read_bytes()  # the CA's key is never written


def test_the_server_certificate_names_loopback_and_the_given_hosts(keys: Path) -> None:
    cert = x509.load_pem_x509_certificate((keys / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "trainer.example"}
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("127.0.0.1", "192.0.2.9", "2001:db8::1")
    }
    assert certificate_device(cert) is None


def test_each_device_file_is_bound_to_its_id(keys: Path) -> None:
    for d in range(3):
        creds = load_device_credentials(device_file(keys, d))
        assert creds.device == d
        assert certificate_device(x509.load_pem_x509_certificate(creds.certificate)) == d
        assert load_device_credentials(keys, d) == creds
    with pytest.raises(CredentialsError, match="device 1, not of device 2"):
        load_device_credentials(device_file(keys, 1), 2)
    with pytest.raises(CredentialsError, match="--id"):
        load_device_credentials(keys)
    with pytest.raises(CredentialsError, match="not a device credential file"):
        load_device_credentials(keys / "server.pem")
    with pytest.raises(CredentialsError, match="does not exist"):
        load_device_credentials(keys, 7)


def test_refusals_when_making_credentials(tmp_path: Path, keys: Path) -> None:
    with pytest.raises(CredentialsError, match="already holds"):
        make_credentials(keys, 1)
    with pytest.raises(CredentialsError, match="at least one device"):
        make_credentials(tmp_path / "a", 0)
    with pytest.raises(CredentialsError, match="not a host name"):
        make_credentials(tmp_path / "b", 1, hosts=["bad host/"])
    with pytest.raises(CredentialsError, match="not an IP address"):
        make_credentials(tmp_path / "c", 1, ips=["example.org"])
    with pytest.raises(CredentialsError, match="not a directory"):
        load_server_credentials(tmp_path / "missing")


def test_a_readable_key_is_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_credentials(tmp_path / "keys", 1)
    (tmp_path / "keys" / "server.key").chmod(0o644)
    load_server_credentials(tmp_path / "keys")
    assert "chmod 600" in capsys.readouterr().err


def test_peer_device_reads_the_certificate_a_peer_presented(keys: Path) -> None:
    creds = load_device_credentials(device_file(keys, 2))
    assert peer_device({"x509_pem_cert": [creds.certificate]}) == 2
    assert peer_device({}) is None
    assert peer_device({"x509_pem_cert": [b"not a certificate"]}) is None
    assert peer_device({"x509_pem_cert": [(keys / "server.pem").read_bytes()]}) is None


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.3.2.1:1", True),
        ("localhost:1", True),
        ("[::1]:50051", True),
        ("0.0.0.0:50051", False),
        ("[::]:1", False),
        ("10.0.0.7:1", False),
        ("trainer.example:50051", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def _whoami(requests: Iterator[pb.Envelope], context: grpc.ServicerContext) -> Iterator[pb.Envelope]:
    for _ in requests:
        yield envelope(pb.PLAN, peer_device(context.auth_context()) or 0, text=context.peer())


def test_mutual_tls_over_grpc_tells_the_server_who_the_device_is(keys: Path) -> None:
    server, port = start_server(_whoami, "127.0.0.1:0", 2, load_server_credentials(keys))
    try:
        for host in ("127.0.0.1", "localhost"):
            outbox = Outbox()
            channel, replies = open_session(f"{host}:{port}", iter(outbox), 30.0, load_device_credentials(keys, 1))
            outbox.control(envelope(pb.HELLO, 1))
            assert Inbox(replies, "server", 30.0).take().device == 1
            outbox.close()
            channel.close()
    finally:
        server.stop(None)


def test_a_tls_device_refuses_a_plain_text_server_and_one_whose_certificate_misses_the_host(keys: Path) -> None:
    plain, plain_port = start_server(_whoami, "127.0.0.1:0", 2)
    tls, tls_port = start_server(_whoami, "0.0.0.0:0", 2, load_server_credentials(keys))
    try:
        with pytest.raises(ConnectionError, match="TLS handshake"):
            open_session(f"127.0.0.1:{plain_port}", iter(()), 30.0, load_device_credentials(keys, 0))
        with pytest.raises(ConnectionError, match=r"TLS handshake.*Hostname"):
            # the certificate is for localhost and 127.0.0.1, not for the name dialled
            open_session(f"127.0.0.2:{tls_port}", iter(()), 30.0, load_device_credentials(keys, 0))
    finally:
        plain.stop(None)
        tls.stop(None)
