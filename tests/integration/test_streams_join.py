"""The streams worker (``inferlog streams`` subprocess) against the real Kafka and schema registry."""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config import CommonConfig
from core.events import REQUEST_TYPE
from core.keys import partition_for
from schemas import AvroSerde
from schemas.serde import RegistryClient, SchemaError, load_schema
from schemas.wire import record_id
from streams.config import StreamsConfig
from tests.support import kafka_wait
from tests.support import streams_harness as T

pytestmark = pytest.mark.integration

S = 1_000_000
FAST = {
    "pair_timeout_s": 5.0,
    "done_retention_s": 10.0,
    "tick_interval_s": 10.0,
    "idle_timeout_s": 3.0,
    "idle_check_interval_s": 0.5,
    "commit_interval_s": 1.0,
    "session_timeout_s": 6.0,
    "standby_replicas": 0,
}


def keyed(recs: list[T.Rec]) -> list[T.Rec]:
    return [r for r in recs if r.key is not None]


def decode_all(cfg: StreamsConfig, topic: str, schema: str, recs: list[T.Rec]) -> list[dict[str, Any]]:
    serde = AvroSerde.for_topic(cfg.registry_url, topic, schema)
    return [serde.decode(r.value) for r in keyed(recs)]


# ---------------------------------------------------------------------------------------------------------
# One worker, many scenarios: produced once, asserted by several tests.
# ---------------------------------------------------------------------------------------------------------
POISON = [
    (None, b"k1", b"{}", [("ce_type", REQUEST_TYPE.encode()), ("ce_source", b"s"), ("ce_specversion", b"1.0")]),
    (
        None,
        b"k2",
        b"{}",
        [("ce_id", b"x"), ("ce_type", b"com.example.other"), ("ce_source", b"s"), ("ce_specversion", b"1.0")],
    ),
    (
        None,
        b"k3",
        b"",
        [
            ("ce_id", b"y"),
            ("ce_type", REQUEST_TYPE.encode()),
            ("ce_source", b"s"),
            ("ce_specversion", b"1.0"),
            ("ce_datasize", b"many"),
        ],
    ),
]


def scenario_events() -> list[Any]:
    t = T.BASE_US
    evs: list[Any] = []
    for i in range(20):
        req, resp = T.pair(f"req-first-{i}", t + i * 1000)
        evs += [req, resp]
        req, resp = T.pair(f"resp-first-{i}", t + i * 1000)
        evs += [resp, req]
    evs.append(T.event("no-resp", "request", t + 100, b'{"instances": [1]}'))
    evs.append(T.event("no-req", "response", t + 200, b'{"predictions": [1]}'))
    req, resp = T.pair("dup", t + 300)
    evs += [req, req, resp, resp, req]
    r1, s1 = T.pair("reuse", t + 400)
    r2, s2 = T.pair("reuse", t + 2 * S)
    evs += [r1, s1, r2, s2]
    evs.append(T.event("err", "request", t + 500, b'{"instances": [1]}'))
    evs.append(T.event("err", "response", t + 600, b'{"error": "model exploded"}'))
    v2req = b'{"inputs":[{"name":"i","shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}'
    v2resp = b'{"id":"1","model_name":"iris-v2","model_version":"3","outputs":[]}'
    evs.append(
        T.event(
            "v2",
            "request",
            t + 700,
            v2req,
            metadata='{"Traceparent":["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]}',
        )
    )
    evs.append(T.event("v2", "response", t + 800, v2resp))
    return evs


# complete records expected per ce id
EXPECTED_COMPLETE = {**{f"req-first-{i}": 1 for i in range(20)}, **{f"resp-first-{i}": 1 for i in range(20)}}
EXPECTED_COMPLETE.update({"dup": 1, "reuse": 2, "err": 1, "v2": 1})
EXPECTED_RECORDS = sum(EXPECTED_COMPLETE.values()) + 2  # + no-resp, no-req


@pytest.fixture(scope="module")
def scenario(stack: CommonConfig) -> Iterator[dict[str, Any]]:
    import uuid

    cfg = T.streams_config(stack, uuid.uuid4().hex[:10], **FAST)
    T.create_topics(cfg)
    T.produce(cfg, POISON)
    T.produce(cfg, scenario_events())
    with T.running_worker(cfg):
        recs = T.read_all(cfg, cfg.topic_records, until=lambda r: len(keyed(r)) >= EXPECTED_RECORDS, timeout_s=90)
        fails = T.read_all(cfg, cfg.topic_failures, until=lambda r: len(keyed(r)) >= 3, timeout_s=30)
        dead = T.read_all(cfg, cfg.topic_deadletter, until=lambda r: len(r) >= 3, timeout_s=30)
        # Every record, any extra (duplicate) output too: all the worker produced before it committed everything.
        T.wait_caught_up(cfg)
        recs = T.read_to_end(cfg, cfg.topic_records)
    yield {"cfg": cfg, "recs": recs, "fails": fails, "dead": dead}


def by_id(cfg: StreamsConfig, recs: list[T.Rec]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in decode_all(cfg, cfg.topic_records, "inference_record", recs):
        out[r["ce_id"]].append(r)
    return out


def test_pairs_in_both_orders_once(scenario: dict[str, Any]) -> None:
    got = by_id(scenario["cfg"], scenario["recs"])
    for ce_id, n in EXPECTED_COMPLETE.items():
        assert [r["status"] for r in got[ce_id]] == ["complete"] * n, ce_id
    r = got["resp-first-3"][0]
    assert r["protocol"] == "v1" and r["latency_ms"] == 20.0 and r["instance_count"] == 1
    assert len(keyed(scenario["recs"])) == EXPECTED_RECORDS  # nothing extra, no duplicates


def test_records_are_co_partitioned_with_events(scenario: dict[str, Any]) -> None:
    cfg = scenario["cfg"]
    for rec in keyed(scenario["recs"]):
        assert rec.key is not None
        assert rec.partition == partition_for(rec.key, cfg.partitions)
    for r in decode_all(cfg, cfg.topic_records, "inference_record", scenario["recs"]):
        src = r["request"] or r["response"]
        assert src["partition"] == partition_for(r["join_key"].encode(), cfg.partitions)


def test_missing_response_and_missing_request(scenario: dict[str, Any]) -> None:
    cfg = scenario["cfg"]
    got = by_id(cfg, scenario["recs"])
    assert [r["status"] for r in got["no-resp"]] == ["request_only"]
    assert [r["status"] for r in got["no-req"]] == ["response_only"]
    assert got["no-resp"][0]["response"] is None
    fails = decode_all(cfg, cfg.topic_failures, "failure_signal", scenario["fails"])
    kinds = {(f["ce_id"], f["kind"]) for f in fails}
    assert {("no-resp", "response_missing"), ("no-req", "request_missing"), ("err", "error_response")} <= kinds
    missing = next(f for f in fails if f["kind"] == "response_missing")
    # detected_time is the deadline in event time (request Ce-Time + pair timeout), not a wall clock.
    assert int(missing["detected_time"].timestamp() * 1e6) == T.BASE_US + 100 + int(cfg.pair_timeout_s * S)


def test_duplicates_dropped_and_reused_ids_paired_separately(scenario: dict[str, Any]) -> None:
    got = by_id(scenario["cfg"], scenario["recs"])
    assert len(got["dup"]) == 1
    reuse = sorted(got["reuse"], key=lambda r: r["event_time"])
    assert [r["request"]["offset"] < r["response"]["offset"] for r in reuse] == [True, True]
    assert reuse[0]["latency_ms"] == reuse[1]["latency_ms"] == 20.0  # not crossed with the other pair
    # Same Kafka key (co-partitioned), distinct identities in the sinks: the second carries its ordinal.
    recs = [r for r in keyed(scenario["recs"]) if r.key and r.key.endswith(b"/reuse")]
    ids = sorted(record_id(r.key.decode(), list(r.headers.items())) for r in recs if r.key)
    first = recs[0].key
    assert first is not None
    assert ids == sorted([first.decode(), f"{first.decode()}#2"])


def test_enrichment_v2_model_and_trace(scenario: dict[str, Any]) -> None:
    got = by_id(scenario["cfg"], scenario["recs"])
    v2 = got["v2"][0]
    assert (v2["protocol"], v2["model_name"], v2["model_version"], v2["instance_count"]) == ("v2", "iris-v2", "3", 2)
    assert v2["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "model exploded" in got["err"][0]["error"]


def test_poison_events_go_to_deadletter_and_worker_continues(scenario: dict[str, Any]) -> None:
    dead = scenario["dead"]
    assert sorted(r.key for r in dead) == [b"k1", b"k2", b"k3"]
    reasons = {r.key: r.headers for r in dead}
    assert reasons[b"k1"]["error.attribute"] == b"id" and reasons[b"k1"]["error.stage"] == b"streams"
    assert reasons[b"k2"]["error.attribute"] == b"type"
    assert reasons[b"k3"]["error.attribute"] == b"datasize"
    assert all(h["error.topic"] == scenario["cfg"].topic_events.encode() for h in reasons.values())
    assert all(r.value == b"{}" or r.key == b"k3" for r in dead)  # original bytes kept
    # the poison came first, every pair after it was still emitted
    assert len(keyed(scenario["recs"])) == EXPECTED_RECORDS


def test_ticks_carry_the_partition_watermark(scenario: dict[str, Any]) -> None:
    ticks = [r for r in scenario["recs"] if r.key is None]
    assert ticks, "no tick records"
    for t in ticks:
        assert t.value == b"" and int(t.headers["inferlog_tick"]) >= T.BASE_US


def test_replay_into_fresh_app_gives_byte_identical_records(scenario: dict[str, Any]) -> None:
    import uuid

    replay = T.replay_config(scenario["cfg"], uuid.uuid4().hex[:8])
    with T.running_worker(replay, "replay"):
        recs = T.read_all(replay, replay.topic_records, until=lambda r: len(keyed(r)) >= EXPECTED_RECORDS, timeout_s=90)
        fails = T.read_all(
            replay, replay.topic_failures, until=lambda r: len(keyed(r)) >= len(keyed(scenario["fails"])), timeout_s=30
        )

    def strip(recs: list[T.Rec]) -> Counter[tuple[int, bytes | None, bytes]]:
        # the 5-byte Confluent header holds the registry's schema id, which is per subject; the rest is
        # the Avro body and must be identical
        return Counter((r.partition, r.key, r.value[5:]) for r in keyed(recs))

    assert strip(recs) == strip(scenario["recs"])
    assert strip(fails) == strip(scenario["fails"])


# ---------------------------------------------------------------------------------------------------------
# Volume, scale-out, crashes
# ---------------------------------------------------------------------------------------------------------
def interleaved_pairs(n: int, seed: int, prefix: str = "p") -> list[Any]:
    """n pairs; each response lands a random distance after (or before) its request."""
    rng = random.Random(seed)
    evs: list[tuple[float, Any]] = []
    for i in range(n):
        req, resp = T.pair(f"{prefix}{i}", T.BASE_US + i * 100)
        evs.append((i, req))
        evs.append((i + rng.uniform(-50, 200), resp))
    return [e for _, e in sorted(evs, key=lambda x: x[0])]


def complete_keys(cfg: StreamsConfig, recs: list[T.Rec]) -> Counter[bytes]:
    return Counter(r.key for r in keyed(recs) if r.key is not None)


def missing_pairs(cfg: StreamsConfig, evs: list[Any], recs: list[T.Rec], workers: list[T.WorkerProcess]) -> str:
    """Why a wait for every pair's record timed out: the events without one (their events partition and
    offset), the group's committed offsets against the partitions' ends, and the workers' logs."""
    seen = {r.key for r in keyed(recs)}
    events = T.read_to_end(cfg, cfg.topic_events)
    missing = [f"{e.key!r} at {e.partition}:{e.offset}" for e in events if e.key not in seen]
    lag = kafka_wait.group_lag(
        cfg.kafka_bootstrap, cfg.app_id, kafka_wait.high_watermarks(cfg.kafka_bootstrap, [cfg.topic_events])
    )
    logs = "\n".join(f"--- worker {w.name}:\n{w.log_text()[-6000:]}" for w in workers)
    return f"{len(missing)} events without a record: {missing[:40]}\ngroup offsets: {[str(p) for p in lag]}\n{logs}"


def test_two_workers_pair_10k_interleaved_events_across_12_partitions(stack: CommonConfig, unique: str) -> None:
    from confluent_kafka.admin import AdminClient

    cfg = T.streams_config(stack, unique, **FAST)
    assert cfg.partitions == 12
    T.create_topics(cfg)
    cfg_b = dataclasses.replace(cfg, store_dir=tempfile.mkdtemp(prefix="streams-b-"))
    n = 5000
    with T.running_worker(cfg, "a"), T.running_worker(cfg_b, "b"):
        T.produce(cfg, interleaved_pairs(n, seed=1))
        recs = T.read_all(cfg, cfg.topic_records, until=lambda r: len(keyed(r)) >= n, timeout_s=120)
        admin = AdminClient({"bootstrap.servers": cfg.kafka_bootstrap})
        group = admin.describe_consumer_groups([cfg.app_id])[cfg.app_id].result(timeout=10)
        owned = [
            {tp.partition for tp in m.assignment.topic_partitions if tp.topic == cfg.topic_events}
            for m in group.members
        ]
    keys = complete_keys(cfg, recs)
    assert len(keys) == n and set(keys.values()) == {1}
    statuses = Counter(r["status"] for r in decode_all(cfg, cfg.topic_records, "inference_record", recs))
    assert statuses == {"complete": n}
    assert len({r.partition for r in keyed(recs)}) == 12
    assert len(owned) == 2 and all(owned) and owned[0].isdisjoint(owned[1]) and owned[0] | owned[1] == set(range(12))


def test_kill9_and_restart_loses_no_pair_and_duplicates_only_identical_bytes(stack: CommonConfig, unique: str) -> None:
    cfg = T.streams_config(stack, unique, **FAST)
    T.create_topics(cfg)
    n = 4000
    evs = interleaved_pairs(n, seed=2, prefix="k")
    w = T.WorkerProcess(cfg, "first")
    try:
        w.wait_ready()
        T.produce(cfg, evs[: len(evs) // 2])
        T.read_all(cfg, cfg.topic_records, until=lambda r: len(keyed(r)) >= n // 4, timeout_s=60)
        T.produce(cfg, evs[len(evs) // 2 :])
        w.kill9()  # mid-stream: outputs and changelog writes in flight, offsets not committed
    finally:
        w.stop()
    with T.running_worker(cfg, "second") as w2:
        T.read_all(
            cfg,
            cfg.topic_records,
            until=lambda r: len(complete_keys(cfg, r)) >= n,
            timeout_s=120,
            explain=lambda r: missing_pairs(cfg, evs, r, [w, w2]),
        )
        # committed offsets keep advancing after the restart on every partition (no stuck gap, FAUST-NOTES §2);
        # then every record the worker produced, duplicates too, is in the topic
        T.wait_caught_up(cfg, timeout_s=30)
        recs = T.read_to_end(cfg, cfg.topic_records)
    values: dict[bytes | None, set[bytes]] = defaultdict(set)
    for r in keyed(recs):
        values[r.key].add(r.value)
    assert len(values) == n  # no lost pair
    assert all(len(v) == 1 for v in values.values())  # a repeated key is a byte-identical copy
    decoded = decode_all(cfg, cfg.topic_records, "inference_record", recs)
    statuses = Counter(r["status"] for r in decoded)
    split = [
        f"{d['join_key']} {d['status']} at {r.partition}:{r.offset}"
        for r, d in zip(keyed(recs), decoded, strict=True)
        if d["status"] != "complete"
    ]
    assert set(statuses) == {"complete"}, f"{statuses}; split pairs: {split[:20]}\n{w2.log_text()[-3000:]}"
    dups = sum(complete_keys(cfg, recs).values()) - n
    print(f"kill -9: {dups} byte-identical duplicate records of {n}")


def test_metadata_set_command_enriches_records(stack: CommonConfig, unique: str) -> None:
    cfg = T.streams_config(stack, unique, **FAST)
    T.create_topics(cfg)
    exe = str(Path(sys.executable).with_name("inferlog"))
    subprocess.run(
        [exe, "metadata", "set", "default/sklearn-iris", "owner=fraud-team", "framework=sklearn"],
        env=T.env_for(cfg),
        check=True,
        capture_output=True,
    )
    T.produce(cfg, T.pair("m1", T.BASE_US))
    with T.running_worker(cfg):
        recs = T.read_all(cfg, cfg.topic_records, until=lambda r: len(keyed(r)) >= 1, timeout_s=60)
    rec = decode_all(cfg, cfg.topic_records, "inference_record", recs)[0]
    assert rec["model_metadata"] == {"framework": "sklearn", "owner": "fraud-team"}


def test_evolved_schema_reads_old_data_and_incompatible_change_is_refused(stack: CommonConfig, unique: str) -> None:
    subject = f"t.records.{unique}-value"
    old = AvroSerde(RegistryClient(stack.registry_url), subject, load_schema("inference_record"))
    req, resp = T.pair("evo", T.BASE_US)
    from streams.enrich import Side, build

    record = build(Side(req, 0, 0, T.BASE_US), Side(resp, 0, 1, T.BASE_US + 20_000), detected_us=T.BASE_US).record
    data = old.encode(record)
    schema = json.loads(load_schema("inference_record"))
    schema["fields"].append({"name": "added_later", "type": "string", "default": "n/a"})
    new = AvroSerde(RegistryClient(stack.registry_url), subject, json.dumps(schema))
    new.register()
    assert new.schema_id != old.schema_id
    decoded = new.decode(data)
    assert decoded["added_later"] == "n/a" and decoded["ce_id"] == "evo"
    bad = json.loads(load_schema("inference_record"))
    bad["fields"].append({"name": "required_later", "type": "string"})
    with pytest.raises(SchemaError):
        AvroSerde(RegistryClient(stack.registry_url), subject, json.dumps(bad)).register()
