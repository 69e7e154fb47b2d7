"""HTTPS for the ingest: a server TLS context (TLS 1.2 or later) whose certificate is reloaded when its files change.

cert-manager (and any Kubernetes Secret volume) rotates a certificate by replacing the files, so the ingest
checks their identity (inode, size, mtime; through the symlinks a Secret volume uses) every
``tls_reload_interval_s`` and, when they changed, builds a fresh context. Connections that are already open keep
the certificate they were made with; every new handshake gets the new one: the listening context's SNI callback,
which OpenSSL calls for every ClientHello (with or without a server name), switches the connection to the
current context. A pair of files that does not load (a rotation caught half-written, a key that does not match)
is logged and retried at the next check, and the previous certificate stays in use.

KServe's agent makes a new TLS connection for every event (no keep-alive, no session resumption), so a full
handshake per event is the cost that matters: ``bench/ingest.py --tls`` measures it for ECDSA P-256 and
RSA-2048 certificates.
"""

from __future__ import annotations

import logging
import os
import ssl

from prometheus_client import Counter

from core.errors import ConfigError

log = logging.getLogger("ingest.tls")

RELOADS = Counter("inferlog_ingest_tls_reloads", "Certificate reloads of the ingest's HTTPS listener", ["outcome"])


class TLSConfigError(ConfigError):
    """The certificate or key files cannot be used."""


def _stamp(path: str) -> tuple[int, int, int]:
    st = os.stat(path)  # follows the ..data symlink of a Secret volume
    return st.st_ino, st.st_size, st.st_mtime_ns


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context for ``cert_file`` (PEM, leaf first, then intermediates) and ``key_file``: TLS 1.2+."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load the certificate {cert_file} with the key {key_file}: {exc}") from exc
    return ctx


class ReloadingTLS:
    """The listening context (:attr:`context`) and the current one it hands each new connection to."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._stamps = self._files()
        self.current = server_context(cert_file, key_file)
        self.context = server_context(cert_file, key_file)
        self.context.sni_callback = self._select

    def _files(self) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
        try:
            return _stamp(self.cert_file), _stamp(self.key_file)
        except OSError:
            return None

    def _select(self, conn: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        conn.context = self.current

    def maybe_reload(self) -> bool:
        """Load the files again if they changed since the last load; True when a new certificate is in use."""
        stamps = self._files()
        if stamps is None or stamps == self._stamps:
            return False
        try:
            fresh = server_context(self.cert_file, self.key_file)
        except TLSConfigError as exc:
            RELOADS.labels(outcome="failed").inc()
            log.warning("tls: new certificate files do not load; keeping the previous one", extra={"error": str(exc)})
            return False
        self.current, self._stamps = fresh, stamps
        RELOADS.labels(outcome="loaded").inc()
        log.info("tls: certificate reloaded", extra={"cert_file": self.cert_file})
        return True
