"""The credentials `medstream broker credentials` writes for a secured local cluster."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from streams import acls
from streams.local_credentials import write_credentials
from streams.local_kafka import BrokerError, read_users
from streams.settings import SecurityProtocol, Settings

BOOTSTRAP = "127.0.0.1:39092,127.0.0.1:39093,127.0.0.1:39094"


def written(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    write_credentials(directory, ["127.0.0.1", "localhost", "kafka.example"], BOOTSTRAP, 3)
    return directory


def env_values(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_the_folder_and_every_file_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    directory = written(tmp_path)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    names = sorted(path.name for path in directory.iterdir())
    users = ["admin", *acls.ROLES]
    assert names == sorted(
        ["ca.pem", "server.pem", "users.properties"] + [f"{u}.env" for u in users]
    )
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_users_are_admin_and_every_role_with_distinct_random_passwords(tmp_path: Path) -> None:
    users = read_users(written(tmp_path) / "users.properties")
    assert set(users) == {"admin", *acls.ROLES}
    assert len(set(users.values())) == len(users)
    assert all(len(password) >= 32 for password in users.values())
    other = read_users(written(tmp_path / "again") / "users.properties")
    assert not set(users.values()) & set(other.values())


def test_each_env_file_is_that_users_valid_client_settings(tmp_path: Path) -> None:
    directory = written(tmp_path)
    users = read_users(directory / "users.properties")
    for user, password in users.items():
        settings = Settings(
            **{
                key.removeprefix("MEDSTREAM_").lower(): value
                for key, value in env_values(directory / f"{user}.env").items()
            }
        )
        assert settings.bootstrap_servers == BOOTSTRAP
        assert settings.security_protocol is SecurityProtocol.SASL_SSL
        assert settings.sasl_username == user
        assert settings.sasl_password is not None
        assert settings.sasl_password.get_secret_value() == password
        assert settings.ssl_cafile == (directory / "ca.pem").resolve()
        assert settings.topic_replication_factor == 3


def test_the_server_pem_is_a_pkcs8_key_and_a_chain_the_ca_verifies_for_every_host(
    tmp_path: Path,
) -> None:
    directory = written(tmp_path)
    server = (directory / "server.pem").read_text()
    # Kafka's PEM key store takes PKCS#8 only ("BEGIN PRIVATE KEY", not "BEGIN RSA/EC ...").
    assert server.startswith("-----BEGIN PRIVATE KEY-----")
    certificate = x509.load_pem_x509_certificate(
        server.split("-----END PRIVATE KEY-----")[1].encode()
    )
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "kafka.example"}
    # A TLS server holding server.pem, and a client trusting only ca.pem, agree.
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(directory / "server.pem")
    client_context = ssl.create_default_context(cafile=str(directory / "ca.pem"))
    for host in ("127.0.0.1", "localhost", "kafka.example"):
        assert handshake(server_context, client_context, host)["subjectAltName"]
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server_context, client_context, "elsewhere.example")


def handshake(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, host: str
) -> dict[str, object]:
    """A TLS handshake in memory; the server certificate the client verified for ``host``."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_context.wrap_bio(to_server, to_client, server_side=True)
    client = client_context.wrap_bio(to_client, to_server, server_hostname=host)
    done = {"server": False, "client": False}
    for _ in range(10):
        for name, side in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
    assert all(done.values()), done
    certificate = client.getpeercert()
    assert certificate is not None
    return dict(certificate)


def test_existing_credentials_are_never_replaced(tmp_path: Path) -> None:
    directory = written(tmp_path)
    before = {path.name: path.read_bytes() for path in directory.iterdir()}
    (directory / "server.pem").unlink()
    with pytest.raises(BrokerError, match=r"already holds ca\.pem, users\.properties"):
        write_credentials(directory, ["127.0.0.1"], BOOTSTRAP, 3)
    after = {path.name: path.read_bytes() for path in directory.iterdir()}
    assert after == {name: blob for name, blob in before.items() if name != "server.pem"}


def test_a_folder_the_env_files_could_not_name_unquoted_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="letters, digits"):
        write_credentials(tmp_path / "my secrets", ["127.0.0.1"], BOOTSTRAP, 3)
    assert not (tmp_path / "my secrets").exists()
