"""The warning that a credential file others may read holds a private key is given only where it holds one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelearn.transport.credentials import CredentialsError, load_device_credentials, make_credentials


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_a_ca_file_given_as_a_device_credential_is_refused_without_a_key_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_credentials(tmp_path / "keys", 1)
    ca = tmp_path / "keys" / "ca.pem"  # mode 0644: others may read it, and it holds no private key
    with pytest.raises(CredentialsError, match="is not a device credential file"):
        load_device_credentials(ca)
    assert "private key" not in capsys.readouterr().err
    device = tmp_path / "keys" / "device-0.pem"
    device.chmod(0o644)
    assert load_device_credentials(device).device == 0
    assert f"warning: {device} holds a private key but others may read it" in capsys.readouterr().err
