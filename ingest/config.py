"""Settings of the ingest (``inferlog ingest --help`` lists them with their ``INFERLOG_*`` variables)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from core.config import CommonConfig, env_name, parse_pairs, setting
from core.errors import ConfigError

# Kafka's default max.message.bytes is 1 MiB; keep headroom for the ce_* headers.
KAFKA_VALUE_LIMIT = 1_000_000 - 64 * 1024


@dataclass(frozen=True)
class IngestConfig(CommonConfig):
    """Settings of the CloudEvents ingest."""

    host: str = setting("0.0.0.0", "Address the ingest listens on")
    port: int = setting(8080, "Port the ingest listens on (KServe's logger.url points here)")
    spool_dir: str = setting("/var/tmp/inferlog-spool", "Directory of the durable local spool")
    spool_max_bytes: int = setting(1 << 30, "Spool capacity in bytes; beyond it the ingest answers 503 + Retry-After")
    spool_segment_bytes: int = setting(16 << 20, "Size at which the spool starts a new segment file")
    produce_timeout_s: float = setting(
        3.0, "How long a request waits for Kafka's delivery report; past it the event is spooled and answered"
    )
    delivery_timeout_s: float = setting(
        300.0,
        "librdkafka message.timeout.ms: how long the producer keeps retrying a record it holds (one spooled after"
        " produce_timeout_s included) before the spool drain takes it over",
    )
    drain_batch: int = setting(500, "Spool records produced per drain round (in order)")
    retry_after_s: int = setting(5, "Retry-After seconds sent with a 503")
    max_body_bytes: int = setting(32 << 20, "Largest accepted request body; larger gets 413")
    claimcheck_threshold_bytes: int = setting(
        256 << 10, "Bodies larger than this go to object storage first (claim check); 0 disables it"
    )
    claimcheck_prefix: str = setting("claimcheck", "Object key prefix of claim-checked bodies")
    sampling: str = setting(
        "", "Sampling rates as ns/isvc=rate,ns=rate,*=rate (0..1), decided by a hash of the join key; empty keeps all"
    )
    redact_fields: str = setting(
        "", "JSON body fields to redact, comma-separated dotted paths (arrays traversed; '**.name' = any depth)"
    )
    redact_headers: str = setting(
        "", "Header names to redact from Ce-Metadata, Ce-Annotations keys and extensions (comma-separated)"
    )
    auth_tokens: str = setting(
        "",
        "Per-namespace tokens as namespace=token,... ('*' = any namespace), presented as Authorization: Bearer, or "
        "in KServe's logger.url as a path /token/<token> or a query ?token=<token>; empty: no token auth",
        secret=True,
    )
    auth_xfcc_trust_domain: str = setting(
        "",
        "Trust Istio's X-Forwarded-Client-Cert: a caller whose SPIFFE id is spiffe://<this>/ns/<ns>/sa/<sa> may "
        "write namespace <ns> (e.g. cluster.local). Set it only when an Istio sidecar that sanitizes the header "
        "fronts the ingest with mTLS; empty: not trusted",
    )
    tls_cert_file: str = setting(
        "", "PEM certificate chain (leaf first) to serve HTTPS with; reloaded when it changes. Empty: plain HTTP"
    )
    tls_key_file: str = setting("", "PEM private key of tls_cert_file")
    tls_reload_interval_s: float = setting(
        10.0, "How often the certificate files are checked for a rotation (cert-manager replaces them)"
    )
    shutdown_timeout_s: float = setting(20.0, "On SIGTERM: time to finish in-flight requests and flush Kafka")
    linger_ms: int = setting(2, "librdkafka linger.ms: how long concurrent requests share a batch")
    workers: int = setting(
        1,
        "Ingest processes serving the port (SO_REUSEPORT) under a supervisor that restarts a dead one, each with "
        "its own Kafka producer and spool directory spool_dir/worker-N and 1/workers of spool_max_bytes; about one "
        "per core. 1: this process serves, spooling into spool_dir itself",
    )

    def validate(self) -> None:
        super().validate()
        if not 0 < self.port < 65536:
            raise ConfigError(f"{env_name('port')} must be a TCP port")
        for name in (
            "spool_max_bytes",
            "spool_segment_bytes",
            "drain_batch",
            "max_body_bytes",
            "retry_after_s",
            "workers",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{env_name(name)} must be >= 1")
        if self.produce_timeout_s <= 0:
            raise ConfigError(f"{env_name('produce_timeout_s')} must be > 0")
        if self.delivery_timeout_s < self.produce_timeout_s:
            raise ConfigError(f"{env_name('delivery_timeout_s')} must be >= {env_name('produce_timeout_s')}")
        if self.claimcheck_threshold_bytes < 0 or self.claimcheck_threshold_bytes > KAFKA_VALUE_LIMIT:
            raise ConfigError(f"{env_name('claimcheck_threshold_bytes')} must be within 0..{KAFKA_VALUE_LIMIT}")
        if self.claimcheck_threshold_bytes == 0 and self.max_body_bytes > KAFKA_VALUE_LIMIT:
            raise ConfigError(
                f"{env_name('max_body_bytes')} must be <= {KAFKA_VALUE_LIMIT} when the claim check is disabled"
            )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError(f"{env_name('tls_cert_file')} and {env_name('tls_key_file')} go together")
        for name in ("tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path and not os.access(path, os.R_OK):
                raise ConfigError(f"{env_name(name)}: {path} is not a readable file")
        if self.tls_reload_interval_s <= 0:
            raise ConfigError(f"{env_name('tls_reload_interval_s')} must be > 0")
        self.sampling_rates()
        self.tokens()

    def sampling_rates(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, raw in parse_pairs(self.sampling, env_name("sampling")).items():
            try:
                rate = float(raw)
            except ValueError:
                raise ConfigError(f"{env_name('sampling')}: rate {raw!r} of {key!r} is not a number") from None
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"{env_name('sampling')}: rate of {key!r} must be within 0..1")
            out[key] = rate
        return out

    def tokens(self) -> dict[str, str]:
        """token → namespace it may write ('*' = any)."""
        out: dict[str, str] = {}
        for namespace, token in parse_pairs(self.auth_tokens, env_name("auth_tokens")).items():
            if not token:
                raise ConfigError(f"{env_name('auth_tokens')}: empty token for {namespace!r}")
            if token in out:
                raise ConfigError(f"{env_name('auth_tokens')}: a token is shared by two namespaces")
            if token != token.strip() or "/" in token or not token.isprintable():
                raise ConfigError(
                    f"{env_name('auth_tokens')}: the token of {namespace!r} has spaces, '/' or control characters "
                    "(it must fit a URL path segment)"
                )
            out[token] = namespace
        return out

    def redacted_field_paths(self) -> list[str]:
        return [p.strip() for p in self.redact_fields.split(",") if p.strip()]

    def redacted_header_names(self) -> list[str]:
        return [h.strip() for h in self.redact_headers.split(",") if h.strip()]
