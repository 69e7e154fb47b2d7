"""The ingest's HTTPS context over real TLS handshakes on 127.0.0.1: TLS 1.2+, and a rotated certificate is
served to new connections while open ones keep theirs."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from core.errors import ConfigError
from ingest.tls import ReloadingTLS
from tests.support.certs import CA


async def _serve(tls: ReloadingTLS) -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=tls.context)
    return server, server.sockets[0].getsockname()[1]


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _connect(port: int, ca: CA, **limits: ssl.TLSVersion) -> tuple[Conn, int]:
    ctx = ssl.create_default_context(cadata=ca.pem.decode())
    for attr, version in limits.items():
        setattr(ctx, attr, version)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return (reader, writer), x509.load_der_x509_certificate(der).serial_number


async def test_a_rotated_certificate_reaches_new_connections_and_a_broken_one_is_not_taken(tmp_path: Path) -> None:
    ca = CA()
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    first = ca.issue("ec")
    first.write(cert, key)
    tls = ReloadingTLS(str(cert), str(key))
    server, port = await _serve(tls)
    try:
        old, serial = await _connect(port, ca)
        assert serial == first.serial
        assert tls.maybe_reload() is False  # nothing changed

        second = ca.issue("rsa")
        second.write(cert, key)
        assert tls.maybe_reload() is True
        new, serial = await _connect(port, ca)
        assert serial == second.serial
        old[1].write(b"still here")  # the connection made before the rotation keeps working
        assert await asyncio.wait_for(old[0].readexactly(10), 5) == b"still here"

        key.write_bytes(first.key_pem)  # a key that does not match the certificate: keep serving the last good one
        assert tls.maybe_reload() is False
        _, serial = await _connect(port, ca)
        assert serial == second.serial
        for _, w in (old, new):
            w.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_tls_older_than_1_2_is_refused(tmp_path: Path) -> None:
    ca = CA()
    ca.issue("ec").write(tmp_path / "c", tmp_path / "k")
    tls = ReloadingTLS(str(tmp_path / "c"), str(tmp_path / "k"))
    server, port = await _serve(tls)
    try:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await _connect(
                port, ca, minimum_version=ssl.TLSVersion.MINIMUM_SUPPORTED, maximum_version=ssl.TLSVersion.TLSv1_1
            )
        _, _ = await _connect(port, ca, maximum_version=ssl.TLSVersion.TLSv1_2)  # 1.2 is enough
    finally:
        server.close()
        await server.wait_closed()


def test_files_that_do_not_load_are_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "c").write_text("not a certificate")
    (tmp_path / "k").write_text("not a key")
    with pytest.raises(ConfigError, match="cannot load the certificate"):
        ReloadingTLS(str(tmp_path / "c"), str(tmp_path / "k"))
