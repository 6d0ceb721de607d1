"""Credentials for mutual TLS: a run's own CA, the server's certificate and one certificate per device.

`make_credentials` writes, into one directory:

- `ca.pem`: the run's certificate authority (public; its private key is never written, so no one can issue more);
- `server.pem` and `server.key`: the server's certificate, for the host names and addresses devices dial;
- `device-N.pem`: everything device N needs in one file: the CA certificate (to check the server), its own
  certificate, whose subject alternative name `pipelearn:device:N` binds it to id N, and its private key.

Keys are EC P-256, written with mode 0600. The TLS itself is gRPC's (BoringSSL); this module only makes and reads
the files and tells which device a peer's certificate names.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"
DEVICE_URI = "pipelearn:device:{}"
"""The subject alternative name (URI) that binds a device certificate to its id."""

_DEVICE_URI = re.compile(r"pipelearn:device:(\d{1,9})")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----\n?", re.DOTALL)
_LOOPBACK_NAMES = ("localhost",)


class CredentialsError(ValueError):
    """Credentials are missing, unreadable or do not fit; the message says which file and what to do."""


@dataclass(frozen=True)
class ServerCredentials:
    """What the server presents (its certificate and key) and trusts (the CA that signed the devices')."""

    ca: bytes
    certificate: bytes
    key: bytes

    def grpc(self) -> grpc.ServerCredentials:
        """gRPC server credentials that require every client to present a certificate from the CA."""
        return grpc.ssl_server_credentials(
            [(self.key, self.certificate)], root_certificates=self.ca, require_client_auth=True
        )


@dataclass(frozen=True)
class DeviceCredentials:
    """What one device presents (its certificate and key, for id `device`) and trusts (the run's CA)."""

    device: int
    ca: bytes
    certificate: bytes
    key: bytes

    def grpc(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials that check the server against the CA and present this device's certificate."""
        return grpc.ssl_channel_credentials(self.ca, self.key, self.certificate)


def device_file(directory: str | Path, device: int) -> Path:
    """The path of device `device`'s credential file in a credentials directory."""
    return Path(directory) / f"device-{device}.pem"


def make_credentials(
    directory: str | Path,
    devices: int,
    hosts: Sequence[str] = (),
    ips: Sequence[str] = (),
    days: int = 365,
) -> list[Path]:
    """Write a new CA, a server certificate for `hosts` and `ips` (plus localhost) and device credentials."""
    if devices < 1:
        raise CredentialsError(f"--devices is {devices}; a run needs at least one device")
    if days < 1:
        raise CredentialsError(f"--days is {days}; certificates must be valid for at least one day")
    root = Path(directory)
    if root.exists() and (root / CA_FILE).exists():
        raise CredentialsError(
            f"{root} already holds credentials ({CA_FILE}); choose a new directory, so that no device is left "
            "holding a certificate from a CA the server no longer trusts"
        )
    names, addresses = _server_names(hosts, ips)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pipelearn run CA")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)

    def leaf(common_name: str, san: list[x509.GeneralName], usage: x509.ObjectIdentifier) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            _builder(name, ca_name, key.public_key(), now, days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), pem

    written = [_write(root / CA_FILE, ca_pem, 0o644)]
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    san += [x509.IPAddress(a) for a in addresses]
    server_cert, server_key = leaf("pipelearn server", san, ExtendedKeyUsageOID.SERVER_AUTH)
    written.append(_write(root / SERVER_CERT_FILE, server_cert, 0o644))
    written.append(_write(root / SERVER_KEY_FILE, server_key, 0o600))
    for d in range(devices):
        uri = x509.UniformResourceIdentifier(DEVICE_URI.format(d))
        cert, key = leaf(f"pipelearn device {d}", [uri], ExtendedKeyUsageOID.CLIENT_AUTH)
        written.append(_write(device_file(root, d), ca_pem + cert + key, 0o600))
    return written


def load_server_credentials(directory: str | Path) -> ServerCredentials:
    """The server's credentials from a directory that `make_credentials` wrote."""
    root = Path(directory)
    if not root.is_dir():
        raise CredentialsError(f"{root} is not a directory; make one with `pipelearn credentials {root} --devices N`")
    ca, cert, key = (_read(root / name) for name in (CA_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE))
    _warn_if_readable(root / SERVER_KEY_FILE)
    return ServerCredentials(ca=ca, certificate=cert, key=key)


def load_device_credentials(path: str | Path, device: int | None = None) -> DeviceCredentials:
    """A device's credentials from its file, or from `device-N.pem` in a directory; the id comes from the file."""
    path = Path(path)
    if path.is_dir():
        if device is None:
            raise CredentialsError(f"{path} is a directory: give --id to pick device-N.pem from it")
        path = device_file(path, device)
    data = _read(path)
    blocks: dict[bytes, list[bytes]] = {b"CERTIFICATE": [], b"PRIVATE KEY": []}
    for match in _PEM_BLOCK.finditer(data):
        blocks.setdefault(match.group(1), []).append(match.group(0))
    if blocks[b"PRIVATE KEY"]:  # a CA file given by mistake holds none: it is refused below, not warned of
        _warn_if_readable(path)
    try:
        certs = [(x509.load_pem_x509_certificate(b), b) for b in blocks[b"CERTIFICATE"]]
    except ValueError as exc:
        raise CredentialsError(f"{path} holds a certificate that cannot be read: {exc}") from None
    cas = [pem for cert, pem in certs if _is_ca(cert)]
    leaves = [(cert, pem) for cert, pem in certs if not _is_ca(cert)]
    if len(cas) != 1 or len(leaves) != 1 or len(blocks[b"PRIVATE KEY"]) != 1:
        raise CredentialsError(
            f"{path} is not a device credential file: it must hold the CA certificate, one device certificate and "
            "one private key, as `pipelearn credentials` writes device-N.pem"
        )
    certified = certificate_device(leaves[0][0])
    if certified is None:
        raise CredentialsError(f"the certificate in {path} names no device (no {DEVICE_URI.format('N')} name)")
    if device is not None and device != certified:
        raise CredentialsError(f"{path} is the credential of device {certified}, not of device {device} (--id)")
    return DeviceCredentials(device=certified, ca=cas[0], certificate=leaves[0][1], key=blocks[b"PRIVATE KEY"][0])


def certificate_device(cert: x509.Certificate) -> int | None:
    """The device id a certificate is bound to by its `pipelearn:device:N` name, or None if it names none."""
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    ids = {int(m.group(1)) for u in uris.get_values_for_type(x509.UniformResourceIdentifier) if (m := _match(u))}
    return ids.pop() if len(ids) == 1 else None


def peer_device(auth_context: Mapping[str, Sequence[bytes]]) -> int | None:
    """The device id in the certificate a TLS peer presented (gRPC's auth context), or None if there is none."""
    pems = auth_context.get("x509_pem_cert") or []
    if len(pems) != 1:
        return None
    try:
        return certificate_device(x509.load_pem_x509_certificate(pems[0]))
    except ValueError:
        return None


def is_loopback(address: str) -> bool:
    """Whether HOST:PORT names this machine only (localhost, 127.0.0.0/8, ::1)."""
    host = address.rsplit(":", 1)[0] if ":" in address else address
    host = host.strip("[]")
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_plain_text(address: str, role: str) -> None:
    """Print a warning on stderr when plain text is used on an address other machines can reach."""
    if not is_loopback(address):
        logging.getLogger(f"pipelearn.{role}").warning(
            "plain text (--insecure) on %s: anyone on the network can read and change this run's traffic and join "
            "as a device; use --credentials",
            address,
        )


def _server_names(
    hosts: Sequence[str], ips: Sequence[str]
) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    names = ["localhost"]
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ipaddress.ip_address("127.0.0.1")]
    for host in hosts:
        try:
            addresses.append(ipaddress.ip_address(host))
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
                raise CredentialsError(f"--host {host!r} is not a host name") from None
            names.append(host)
    for ip in ips:
        try:
            addresses.append(ipaddress.ip_address(ip))
        except ValueError:
            raise CredentialsError(f"--ip {ip!r} is not an IP address") from None
    return list(dict.fromkeys(names)), list(dict.fromkeys(addresses))


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey, now: datetime.datetime, days: int
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # tolerate clocks a little behind
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _match(uri: str) -> re.Match[str] | None:
    return _DEVICE_URI.fullmatch(uri)


def _write(path: Path, data: bytes, mode: int) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # the umask may have narrowed it, and an existing file keeps its old mode
    return path


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CredentialsError(f"{path} does not exist; make credentials with `pipelearn credentials DIR`") from None
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror}") from None


def _warn_if_readable(path: Path) -> None:
    if os.name == "posix" and path.stat().st_mode & 0o077:
        logging.getLogger("pipelearn.transport").warning(
            "%s holds a private key but others may read it; chmod 600 %s", path, path
        )
