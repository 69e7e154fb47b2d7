"""Unit tests of the shared module: config, retry, keys, events binding, serde canonical form, logs."""

from __future__ import annotations

import argparse
import json
import logging
import ssl
from dataclasses import dataclass

import pytest

from core import config
from core.config import CommonConfig, setting
from core.errors import ConfigError, InferlogError, TransientError, is_retriable
from core.events import REQUEST_TYPE, EventError, LoggedEvent, from_kafka, to_kafka
from core.keys import join_key, murmur2, partition_for, split_join_key
from core.logs import JsonFormatter
from core.retry import Backoff, retry_sync


@pytest.mark.parametrize(
    ("data", "expected"),
    [  # Kafka's own test vectors (clients UtilsTest.testMurmur2)
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_java(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_partition_for_agrees_with_aiokafka() -> None:
    from aiokafka.partitioner import murmur2 as aiokafka_murmur2

    for i in range(500):
        key = join_key("ns", "isvc", "predictor", f"id-{i}").encode()
        assert partition_for(key, 12) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % 12


def test_join_key_roundtrip_with_slash_in_id() -> None:
    key = join_key("default", "sklearn-iris", "predictor", "a/b")
    assert key == "default/sklearn-iris/predictor/a/b"
    assert split_join_key(key) == ("default", "sklearn-iris", "predictor", "a/b")


@dataclass(frozen=True)
class _Cfg(CommonConfig):
    port: int = setting(8080, "a port")
    ratio: float = setting(0.5, "a ratio")
    enabled: bool = setting(False, "a switch")
    token: str = setting("", "a secret", secret=True)


def test_config_env_then_flags_and_types() -> None:
    cfg = config.load(_Cfg, env={"INFERLOG_PORT": "9000", "INFERLOG_ENABLED": "yes", "INFERLOG_TOKEN": "s3cr3t"})
    assert (cfg.port, cfg.enabled, cfg.ratio) == (9000, True, 0.5)
    parser = argparse.ArgumentParser()
    config.add_flags(parser, _Cfg)
    args = parser.parse_args(["--port", "9100", "--no-enabled"])
    cfg2 = config.load(_Cfg, env={"INFERLOG_PORT": "9000"}, overrides=vars(args))
    assert (cfg2.port, cfg2.enabled) == (9100, False)
    assert config.redacted(cfg)["token"] == "***"
    assert "s3cr3t" not in json.dumps(config.redacted(cfg))


def test_config_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="INFERLOG_PORT"):
        config.load(_Cfg, env={"INFERLOG_PORT": "eighty"})
    with pytest.raises(ConfigError, match="INFERLOG_PARTITIONS"):
        config.load(_Cfg, env={"INFERLOG_PARTITIONS": "0"})
    with pytest.raises(ConfigError, match="INFERLOG_LOG_LEVEL"):
        config.load(_Cfg, env={"INFERLOG_LOG_LEVEL": "loud"})
    with pytest.raises(ConfigError, match="INFERLOG_KAFKA_OPTIONS"):
        config.load(_Cfg, env={"INFERLOG_KAFKA_OPTIONS": "novalue"})


def test_markdown_table_lists_each_setting_once() -> None:
    table = config.markdown_table([CommonConfig, _Cfg])
    assert table.count("`INFERLOG_KAFKA_BOOTSTRAP`") == 1
    assert "`INFERLOG_PORT`" in table
    assert "inferlog-secret" not in table  # secrets' defaults are not printed


def test_retry_sync_retries_only_retriable() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("busy")
        return "ok"

    assert retry_sync(flaky, Backoff(base_s=0.001, attempts=5)) == "ok"
    assert len(calls) == 3

    def permanent() -> None:
        calls.append(1)
        raise InferlogError("bad input")

    calls.clear()
    with pytest.raises(InferlogError):
        retry_sync(permanent, Backoff(base_s=0.001, attempts=5))
    assert len(calls) == 1


def test_retry_sync_gives_up_after_attempts() -> None:
    calls = []

    def down() -> None:
        calls.append(1)
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        retry_sync(down, Backoff(base_s=0.001, attempts=4))
    assert len(calls) == 4
    assert is_retriable(ConnectionError()) and not is_retriable(ValueError())


def test_transient_kafka_errors_are_retriable() -> None:
    from confluent_kafka import KafkaError, KafkaException

    # librdkafka does not flag this one retriable, but a fresh topic has no leader for a moment
    assert is_retriable(KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)))
    assert is_retriable(KafkaException(KafkaError(KafkaError._TRANSPORT)))
    assert not is_retriable(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))


def test_backoff_is_bounded() -> None:
    with pytest.raises(ValueError):
        Backoff(attempts=0, deadline_s=0)
    b = Backoff(base_s=1, cap_s=4, jitter=False)
    assert [b.delay(i) for i in range(5)] == [1, 2, 4, 4, 4]


def test_event_binding_roundtrip() -> None:
    ev = LoggedEvent(
        id="5011cc37",
        source="http://localhost:9081/",
        type=REQUEST_TYPE,
        time="2026-03-10T09:14:03.811983Z",
        datacontenttype="application/json",
        namespace="default",
        isvc="sklearn-iris",
        component="predictor",
        metadata='{"X-Request-Id":["r-42"]}',
        annotations='{"team":"fraud"}',
        extensions={"traceparent": "00-ab"},
        data=b'{"instances": [[1]]}',
    )
    key, headers, value = to_kafka(ev)
    assert key == b"default/sklearn-iris/predictor/5011cc37"
    assert ("ce_endpoint", b"") in headers and ("content-type", b"application/json") in headers
    assert from_kafka(headers, value) == ev


def test_event_missing_required_attribute_is_named() -> None:
    with pytest.raises(EventError) as err:
        from_kafka([("ce_specversion", b"1.0"), ("ce_source", b"s"), ("ce_type", b"t")], b"")
    assert err.value.attribute == "id" and not err.value.retriable


def test_json_log_lines_carry_extras() -> None:
    record = logging.LogRecord("inferlog.test", logging.INFO, __file__, 1, "spooled", None, None)
    record.depth = 3
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "spooled" and line["depth"] == 3 and line["level"] == "info"


def test_serde_canonical_sorts_maps() -> None:
    from schemas.serde import _canonical

    assert list(_canonical({"b": 1, "a": {"d": 1, "c": 2}})) == ["a", "b"]
    assert list(_canonical({"a": {"d": 1, "c": 2}})["a"]) == ["c", "d"]


def test_kafka_options_override_inferlog_defaults_but_not_the_callers() -> None:
    from core.kafka import consumer_config, producer_config

    cfg = config.load(CommonConfig, env={"INFERLOG_KAFKA_OPTIONS": "compression.type=none,security.protocol=SSL"})
    prod = producer_config(cfg, **{"linger.ms": 0})
    assert prod["compression.type"] == "none" and prod["security.protocol"] == "SSL"
    assert prod["linger.ms"] == 0 and prod["partitioner"] == "murmur2_random"
    assert consumer_config(cfg, "g")["security.protocol"] == "SSL"


def test_aiokafka_security_follows_kafka_options() -> None:
    from core.kafka import aiokafka_security

    def sec(options: str) -> dict[str, object]:
        return aiokafka_security(config.load(CommonConfig, overrides={"kafka_options": options}))

    assert sec("") == {"security_protocol": "PLAINTEXT"}
    sasl = sec("security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512,sasl.username=u,sasl.password=p")
    assert sasl["security_protocol"] == "SASL_SSL" and sasl["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (sasl["sasl_plain_username"], sasl["sasl_plain_password"]) == ("u", "p")
    assert isinstance(sasl["ssl_context"], ssl.SSLContext)
    assert "ssl_context" not in sec("security.protocol=SASL_PLAINTEXT,sasl.username=u,sasl.password=p")
    insecure = sec("security.protocol=SSL,enable.ssl.certificate.verification=false")["ssl_context"]
    assert isinstance(insecure, ssl.SSLContext) and insecure.verify_mode == ssl.CERT_NONE
    for bad, words in [
        ("security.protocol=SASL_SSL,sasl.mechanism=OAUTHBEARER,sasl.username=u,sasl.password=p", "OAUTHBEARER"),
        ("security.protocol=SASL_SSL", "sasl.username"),
        ("security.protocol=SSL,ssl.ca.location=/nonexistent/ca.pem", "TLS files"),
        ("security.protocol=KERBEROS", "not supported"),
    ]:
        with pytest.raises(ConfigError, match=words):
            sec(bad)
