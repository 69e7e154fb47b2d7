"""The pure parts of bench/peers.py: the peers' generated configurations, the bridge's request bytes and the
lost/extra arithmetic. (The benchmark's numbers are never tested: they depend on the machine.)"""

from __future__ import annotations

import json
from base64 import b64decode
from pathlib import Path

import yaml

from bench.peers import Tally, benthos_config, strimzi_config, strimzi_missing, strimzi_request_parts


def test_benthos_config_is_the_fair_one() -> None:
    conf = yaml.safe_load(benthos_config(18123, "bench.t", "127.0.0.1:19092, 127.0.0.1:19094"))
    assert conf["http"] == {"enabled": False}
    server = conf["input"]["http_server"]
    assert server["address"] == "127.0.0.1:18123" and server["path"] == "/" and server["allowed_verbs"] == ["POST"]
    out = conf["output"]["kafka_franz"]
    assert out["seed_brokers"] == ["127.0.0.1:19092", "127.0.0.1:19094"]
    assert out["topic"] == "bench.t"
    assert out["key"] == '${! meta("Ce-Id") }'
    assert out["partitioner"] == "murmur2_hash"
    assert out["compression"] == "lz4"
    assert out["idempotent_write"] is True
    assert out["max_in_flight"] == 64
    assert out["metadata"] == {"include_prefixes": ["Ce-"]}


def test_strimzi_config_asks_for_acks_all_idempotent_lz4() -> None:
    props = dict(line.split("=", 1) for line in strimzi_config(18124, 18125, "127.0.0.1:19092").splitlines())
    assert props["kafka.producer.acks"] == "all"
    assert props["kafka.producer.enable.idempotence"] == "true"
    assert props["kafka.producer.compression.type"] == "lz4"
    assert props["http.port"] == "18124" and props["http.management.port"] == "18125"


def test_strimzi_request_is_one_record_keyed_by_the_id_with_a_right_content_length() -> None:
    body = b'{"inputs":[1,2]}   '
    head, tail = strimzi_request_parts(18124, "bench.t", body, {"Ce-Type": "x.y", "Ce-Namespace": "ns"})
    event_id = "0" * 36
    request = head + event_id.encode() + tail
    headers, payload = request.split(b"\r\n\r\n", 1)
    assert headers.startswith(b"POST /topics/bench.t HTTP/1.1\r\n")
    assert f"Content-Length: {len(payload)}".encode() in headers
    (record,) = json.loads(payload)["records"]
    assert record["key"] == event_id
    assert record["value"] == {"inputs": [1, 2]}
    assert {h["key"]: b64decode(h["value"]).decode() for h in record["headers"]} == {
        "Ce-Type": "x.y",
        "Ce-Namespace": "ns",
    }


def test_strimzi_without_a_built_distribution_is_a_reason_not_an_error(tmp_path: Path) -> None:
    why = strimzi_missing(tmp_path / "nothing-here")
    assert why is not None and "not on Maven Central" in why and "skipped" in why


def test_tally() -> None:
    assert (Tally(10, 10).lost, Tally(10, 10).extra) == (0, 0)
    assert (Tally(10, 7).lost, Tally(10, 7).extra) == (3, 0)
    assert (Tally(7, 10).lost, Tally(7, 10).extra) == (0, 3)
