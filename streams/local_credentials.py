"""Credentials for a secured local broker: a private CA, the brokers' certificate, one SCRAM user
per role and each role's client settings, written where ``broker start --sasl-ssl-dir`` reads.

A trial or test cluster's certificates, from a CA made for it alone (trustme). A production
cluster's come from the organisation's PKI, or from Strimzi's cluster CA on Kubernetes.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from streams import acls
from streams.local_kafka import SASL_SSL_ADMIN, BrokerError

SERVER_PEM = "server.pem"
CA_PEM = "ca.pem"
USERS_FILE = "users.properties"
MECHANISM = "SCRAM-SHA-512"
_PLAIN_PATH = re.compile(r"[A-Za-z0-9./_+-]+")


def env_file_name(user: str) -> str:
    return f"{user}.env"


def write_tls(directory: Path, hosts: Iterable[str]) -> None:
    """``ca.pem`` (a new CA) and ``server.pem``: the unencrypted PKCS#8 key, then the chain of a
    certificate for ``hosts``, as Kafka's PEM key store wants them (it reads no PKCS#1 key)."""
    import trustme
    from cryptography.hazmat.primitives import serialization

    names = list(dict.fromkeys(hosts))
    if not names:
        raise BrokerError("the brokers' certificate needs at least one host name")
    authority = trustme.CA(organization_name="medstream local broker")
    leaf = authority.issue_cert(*names)
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(directory / SERVER_PEM, pkcs8 + chain)
    _write_private(directory / CA_PEM, authority.cert_pem.bytes())


def role_settings(
    directory: Path,
    user: str,
    password: str,
    bootstrap_servers: str,
    replication_factor: int,
) -> dict[str, str]:
    """The ``MEDSTREAM_*`` settings a client of ``user`` connects with."""
    return {
        "MEDSTREAM_BOOTSTRAP_SERVERS": bootstrap_servers,
        "MEDSTREAM_TOPIC_REPLICATION_FACTOR": str(replication_factor),
        "MEDSTREAM_SECURITY_PROTOCOL": "SASL_SSL",
        "MEDSTREAM_SASL_MECHANISM": MECHANISM,
        "MEDSTREAM_SSL_CAFILE": str(directory.resolve() / CA_PEM),
        "MEDSTREAM_SASL_USERNAME": user,
        "MEDSTREAM_SASL_PASSWORD": password,
    }


def write_credentials(
    directory: Path,
    hosts: Iterable[str],
    bootstrap_servers: str,
    replication_factor: int,
) -> list[Path]:
    """Everything a secured local cluster and its clients need, in ``directory`` (mode 0700,
    the files 0600): ``ca.pem``, ``server.pem``, ``users.properties`` (``admin`` and each role
    of streams/acls.py, with random passwords) and one ``<user>.env`` of client settings per
    user. Refuses to replace any of them: a broker keeps the users it first started with, so
    new passwords would lock its clients out."""
    if not _PLAIN_PATH.fullmatch(str(directory.resolve())):
        raise BrokerError(
            "the credentials' folder must have a path of letters, digits and ./_+- only: the "
            "env files name it unquoted"
        )
    users = {name: secrets.token_urlsafe(24) for name in (SASL_SSL_ADMIN, *acls.ROLES)}
    targets = [directory / SERVER_PEM, directory / CA_PEM, directory / USERS_FILE]
    targets += [directory / env_file_name(user) for user in users]
    present = [path.name for path in targets if path.exists()]
    if present:
        raise BrokerError(
            f"{directory} already holds {', '.join(present)}; use it as it is, or remove it "
            "together with the broker's data directory to start again"
        )
    write_tls(directory, hosts)
    _write_private(directory / USERS_FILE, _lines({name: pw for name, pw in users.items()}))
    for user, password in users.items():
        values = role_settings(directory, user, password, bootstrap_servers, replication_factor)
        _write_private(directory / env_file_name(user), _lines(values))
    return targets


def _lines(values: Mapping[str, str]) -> bytes:
    # token_urlsafe passwords and these paths hold no quote, space or '$': the lines read the
    # same to `set -a; . FILE`, to an env file of systemd or podman, and to users.properties.
    return "".join(f"{key}={value}\n" for key, value in values.items()).encode()


def _write_private(path: Path, content: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
