"""Kafka client settings shared by every producer and consumer of inferlog.

Every producer is idempotent with ``acks=all`` and uses librdkafka's ``murmur2_random`` partitioner, the
Java-compatible one, so that confluent-kafka, aiokafka/Faust and Java clients agree on where a key lives
(see :func:`core.keys.partition_for`).
"""

from __future__ import annotations

import ssl
from typing import Any

from core.config import CommonConfig, env_name
from core.errors import ConfigError


def base_config(cfg: CommonConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"bootstrap.servers": cfg.kafka_bootstrap}
    out.update(cfg.kafka_extra())
    return out


def producer_config(cfg: CommonConfig, **overrides: Any) -> dict[str, Any]:
    """Producer settings: inferlog's defaults, then the user's ``kafka_options`` (e.g. ``compression.type=none``),
    then the caller's ``overrides``."""
    out: dict[str, Any] = {
        "bootstrap.servers": cfg.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "compression.type": "lz4",
        "linger.ms": 5,
    }
    out.update(cfg.kafka_extra())
    out.update(overrides)
    return out


#: Fetches of a consumer that writes in batches (a sink): the broker answers once it has this much for the
#: consumer or after this long, instead of at the first byte. At 800 records/s each sink fetched a few records
#: at a time; with these, its consume thread wakes ~10 times a second, and the 0.1 s is far below its linger.
BATCH_FETCH: dict[str, Any] = {"fetch.min.bytes": 256 * 1024, "fetch.wait.max.ms": 100}


def consumer_config(
    cfg: CommonConfig, group_id: str, *, defaults: dict[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """Consumer settings: inferlog's defaults (and the caller's ``defaults``), then the user's ``kafka_options``,
    then the caller's ``overrides``."""
    out: dict[str, Any] = {
        "bootstrap.servers": cfg.kafka_bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
        **(defaults or {}),
    }
    out.update(cfg.kafka_extra())
    out.update(overrides)
    return out


_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def aiokafka_security(cfg: CommonConfig) -> dict[str, Any]:
    """The security part of the user's librdkafka ``kafka_options`` as aiokafka keyword arguments, so that the
    aiokafka clients (Faust's, the metadata tail) reach the same cluster as the confluent-kafka ones.

    Understood: ``security.protocol`` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), ``sasl.mechanism(s)`` (PLAIN,
    SCRAM-SHA-256/512), ``sasl.username``, ``sasl.password``, ``ssl.ca.location``, ``ssl.certificate.location``,
    ``ssl.key.location``, ``ssl.key.password``, ``enable.ssl.certificate.verification``. Anything else that
    aiokafka cannot do (e.g. OAUTHBEARER, GSSAPI) is a :class:`ConfigError` rather than a silent plaintext client.
    """
    opts = cfg.kafka_extra()
    where = env_name("kafka_options")
    protocol = str(opts.get("security.protocol", "PLAINTEXT")).upper()
    if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise ConfigError(f"{where}: security.protocol={protocol} is not supported by the Faust/aiokafka clients")
    out: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        try:
            ctx = ssl.create_default_context(cafile=opts.get("ssl.ca.location") or None)
            if opts.get("ssl.certificate.location"):
                ctx.load_cert_chain(
                    opts["ssl.certificate.location"], opts.get("ssl.key.location"), opts.get("ssl.key.password")
                )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{where}: cannot load the TLS files: {exc}") from exc
        if str(opts.get("enable.ssl.certificate.verification", "true")).lower() == "false":
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        out["ssl_context"] = ctx
    if protocol.startswith("SASL"):
        mechanism = str(opts.get("sasl.mechanism") or opts.get("sasl.mechanisms") or "PLAIN").upper()
        if mechanism not in _SASL_MECHANISMS:
            raise ConfigError(f"{where}: sasl.mechanism={mechanism} is not supported; use one of {_SASL_MECHANISMS}")
        if not opts.get("sasl.username") or not opts.get("sasl.password"):
            raise ConfigError(f"{where}: SASL needs sasl.username and sasl.password")
        out.update(
            sasl_mechanism=mechanism,
            sasl_plain_username=opts["sasl.username"],
            sasl_plain_password=opts["sasl.password"],
        )
    return out
