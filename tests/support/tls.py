"""A throwaway certificate authority, a server certificate for 127.0.0.1/localhost and a client
certificate (for servers that ask for one, as redis-server with TLS does by default): the
package's own (`repobox demo` makes its remote's the same way)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repobox_cli.demo.certs import make_certs


@dataclass(frozen=True)
class TestCA:
    __test__ = False  # not a pytest test class

    ca_file: Path  # PEM CA certificate (use as GIT_SSL_CAINFO / cafile)
    cert_file: Path  # PEM server certificate for 127.0.0.1 / localhost
    key_file: Path  # PEM (unencrypted PKCS#8) server private key
    client_cert_file: Path  # PEM client certificate (clientAuth)
    client_key_file: Path  # its private key (mode 600)


def make_test_ca(dir: Path) -> TestCA:
    """Write ca.pem, server.pem, server-key.pem, client.pem and client-key.pem into `dir`."""
    files = make_certs(Path(dir), organization="repobox tests", client=True)
    assert files.client_cert_file is not None and files.client_key_file is not None
    return TestCA(files.ca_file, files.cert_file, files.key_file, files.client_cert_file, files.client_key_file)
