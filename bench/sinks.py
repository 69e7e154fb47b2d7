"""Throughput of the sinks next to their ceilings, measured in the same run on the local stack.

- S3: the sink (consume, decode, flatten, Parquet, upload, commit) against putting the *same object bytes*
  it wrote with a bare boto3 client.
- OpenSearch: the sink (consume, decode, build documents, bulk, commit) against POSTing the same
  pre-serialized ``_bulk`` bodies with a bare urllib3 client to fresh indices with the same template.

Same concurrency on both sides: the sink writes up to ``--in-flight`` batches at once (background threads,
while its consume thread reads and decodes the next ones), and the ceiling sends its requests from as many
threads (one request per thread at a time). The header line states the number.

Sink time runs from the first record consumed to the last successful write (group join excluded).
Prints records/s and the ratio sink/ceiling, and the CPU the sink spent: its consume thread's CPU seconds
(the Python work: decode, flatten, encode) and the whole process's (librdkafka's threads too), as records
per CPU-second. The S3 ceiling is a few MB of compressed Parquet put in a handful of requests, so the S3
ratio is bound by per-record CPU (mostly Avro decoding), not by the store: ``--steps`` (on by default for S3)
prints µs/record of each CPU step on a sample, including the row-dict path (flatten, then
``Table.from_pylist``) as the baseline of the sink's column-wise ``to_table``, and the framework's per-record
work (batches, cuts, items) with each message through ``_handle`` as the baseline of the consume loop's in-line
``_handle_all`` (and the same for the OpenSearch sink).

Floors, measured in the same run for each sink: a bare confluent-kafka consumer with the sink's consumer
settings reading the same records (fresh group, from the beginning, first to last record), once without and
once with ``AvroSerde.decode_many`` of each value. No sink that consumes from Kafka can beat the first, and
every sink decodes. Also printed, per record, for the sink's run (first record to last write) and for the
ceiling: the CPU of the sink process or the ceiling's client, of the store's server and of the Kafka broker
(their pids from ``inferlog stack status``, /proc) and of the whole machine (other users included). On a small
machine the sink, Kafka and the store share the cores: when the ceiling saturates them, the sink can reach at
most (client + store + Kafka CPU per record of the ceiling) / (the same of the sink's run) of it, printed as
the co-location bound.
Needs the local stack (``inferlog stack start``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import urllib3
from inferlog_stack.manager import StackConfig

from bench.procstat import TICK_HZ, system_busy, tree_cpu_s
from core.config import load
from core.retry import wait_until
from core.runtime import tune_gc
from sinks.config import SinkConfig
from sinks.framework import GC_GEN0, Batch, Item, Sink, SinkRunner
from sinks.opensearch import OpenSearchSink, OpenSearchSinkConfig, chunks, index_templates, prepare
from sinks.s3 import S3Sink, S3SinkConfig, make_client
from tests.sinks_support import (
    T0_US,
    create_topics,
    group_caught_up,
    make_record,
    produce,
    produce_ticks,
    sink_config,
)


def server_cpu(stack: StackConfig, name: str) -> Callable[[], float]:
    """A function giving the CPU seconds the stack's server ``name`` used so far (0.0 when not known)."""
    from inferlog_stack import manager

    pid = next((r["pid"] for r in manager.status(stack) if r["server"] == name and r["pid"]), None)
    return (lambda: tree_cpu_s(pid)) if pid else (lambda: 0.0)


def _machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores, from /proc/stat)."""
    try:
        return system_busy()[0] / TICK_HZ
    except (OSError, ValueError):
        return 0.0


CPUS = os.cpu_count() or 1


@dataclasses.dataclass
class Usage:
    """CPU seconds spent during one phase (the sink's run or the ceiling)."""

    wall_s: float
    machine_s: float  # every process on the machine (other users' too)
    own_s: float  # this process: the sink, or the ceiling's client
    store_s: float  # the store's server
    kafka_s: float  # the Kafka broker


class Meter:
    """Reads the CPU counters of a phase: ``start = meter.read()`` … ``meter.since(start)``."""

    def __init__(self, stack: StackConfig, store: str) -> None:
        self.store, self.kafka = server_cpu(stack, store), server_cpu(stack, "kafka")

    def read(self) -> tuple[float, ...]:
        return time.monotonic(), _machine_busy_s(), time.process_time(), self.store(), self.kafka()

    def since(self, start: tuple[float, ...]) -> Usage:
        return Usage(*(b - a for a, b in zip(start, self.read(), strict=True)))


@dataclasses.dataclass
class Run:
    rate: float  # records/s, first record consumed to last write
    written: int
    thread_cpu_s: float  # CPU of the sink's consume thread
    process_cpu_s: float  # CPU of the whole process while the sink ran (librdkafka threads included)
    usage: Usage  # CPU used from the first record to the last write (the store's, Kafka's, the machine's)


def run_sink(cfg: SinkConfig, sink: Sink, n: int, in_flight: int, meter: Meter) -> Run:
    """Run ``sink`` until it wrote ``n`` records and its group caught up."""
    runner = SinkRunner(cfg, sink, max_in_flight=in_flight)
    stop, errors, cpu = threading.Event(), [], []

    def target() -> None:
        started = time.thread_time()
        try:
            runner.run(stop)
        except BaseException as exc:
            errors.append(exc)
        finally:
            cpu.append(time.thread_time() - started)

    proc0 = time.process_time()
    thread = threading.Thread(target=target, name="bench-sink", daemon=True)
    thread.start()
    # cheap in-process condition first: polling the group's offsets costs CPU the sink competes for
    wait_until(lambda: bool(errors) or runner.stats.first_record_at > 0, timeout_s=120, interval_s=0.02, what="first")
    start = meter.read()  # the CPU counters from the first record to the last write (within a poll interval)
    wait_until(lambda: bool(errors) or runner.stats.written >= n, timeout_s=600, interval_s=0.05, what="written")
    usage = meter.since(start)
    wait_until(
        lambda: bool(errors) or group_caught_up(cfg, runner.group, cfg.topics()), timeout_s=600, what="caught up"
    )
    stop.set()
    thread.join(60)
    proc = time.process_time() - proc0
    if errors:
        raise errors[0]
    st = runner.stats
    return Run(st.written / (st.last_write_at - st.first_record_at), st.written, cpu[0], proc, usage)


def best_us(fn: Callable[[], Any], n: int) -> tuple[float, Any]:
    """(µs of CPU per record, result) of ``fn`` over ``n`` records: the best of 3 runs."""
    times, out = [], None
    for _ in range(3):
        c = time.process_time()
        out = fn()
        times.append(time.process_time() - c)
    return min(times) / n * 1e6, out


def steps_s3(cfg: S3SinkConfig, recs: list[dict]) -> None:
    """µs/record of each CPU step of the S3 sink on ``recs`` (best of 3), with the row-dict path as the
    baseline that the column-wise build must beat."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas import AvroSerde
    from sinks.flatten import arrow_schema, flatten, record_time_us, to_table
    from sinks.s3 import encode_objects

    serde = AvroSerde.for_topic(cfg.registry_url, cfg.topic_records, "inference_record")
    values = [serde.encode(r) for r in recs]
    n = len(values)

    def best(fn: Callable[[], Any]) -> tuple[float, Any]:
        return best_us(fn, n)

    schema = arrow_schema("inference_record")
    rows: list[tuple[str, float]] = []
    us, dec = best(lambda: [serde.decode(v) for v in values])
    rows.append(("decode (AvroSerde.decode each)", us))
    rows.append(("decode (AvroSerde.decode_many)", best(lambda: serde.decode_many(values))[0]))
    rows.append(("record time (datetime)", best(lambda: [record_time_us(d) for d in dec])[0]))
    raw = AvroSerde.for_topic(cfg.registry_url, cfg.topic_records, "inference_record", timestamps_as_int=True)
    us, dec = best(lambda: raw.decode_many(values))
    rows.append(("decode, timestamps as int (the S3 sink)", us))
    us, times = best(lambda: [record_time_us(d) for d in dec])
    rows.append(("record time (int)", us))
    us, flat = best(lambda: [flatten("inference_record", d, "t", 0, i) for i, d in enumerate(dec)])
    rows.append(("row dicts: flatten", us))
    rows.append(("row dicts: pa.Table.from_pylist(rows)", best(lambda: pa.Table.from_pylist(flat, schema=schema))[0]))
    us, table = best(lambda: to_table("inference_record", dec, "t", 0, list(range(n))))
    rows.append(("column-wise: to_table (the S3 sink)", us))

    def parquet() -> bytes:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression=cfg.s3_parquet_compression, row_group_size=128 * 1024)
        return buf.getvalue()

    rows.append(("parquet write (zstd)", best(parquet)[0]))
    batch = Batch(cfg.topic_records, 0, "inference_record")
    for i, (d, t) in enumerate(zip(dec, times, strict=True)):
        batch.add(Item(i, None, values[i], [], record=d, time_us=t), t)
    rows.append(("encode_objects (group+table+parquet)", best(lambda: encode_objects(cfg, batch))[0]))
    rows.append(("framework: _handle each (general)", best(lambda: handle_only(cfg, values, dec, in_line=False))[0]))
    rows.append(("framework: _handle_all (the sink)", best(lambda: handle_only(cfg, values, dec, in_line=True))[0]))
    print(f"  s3 CPU steps on {n} records (µs/record, best of 3):")
    for name, us in rows:
        print(f"    {name:<40} {us:7.1f}")


def handle_only(cfg: S3SinkConfig, values: list[bytes], decoded: list[dict], *, in_line: bool) -> None:
    """The consume loop's per-record work on ``values`` in 4 partitions and ``consume()`` results of 1000, beyond
    decoding (the records come decoded) and converting (no :attr:`Sink.convert_every`): batches, cuts, items."""
    from confluent_kafka import Message

    by_value = {id(v): d for v, d in zip(values, decoded, strict=True)}

    class Decoded:
        def decode_many(self, vs: list[bytes]) -> list[dict]:
            return [by_value[id(v)] for v in vs]

    class Nothing(Sink):
        kind, convert_every, max_in_flight = "bench", 0, 0

        def write(self, batch: Batch) -> list:
            return []

    class Offsets:
        def commit(self, **_: Any) -> None:
            pass

    topic = cfg.topic_records
    run_cfg = dataclasses.replace(cfg, flush_records=max(1, len(values) // 8))
    runner = SinkRunner(run_cfg, Nothing(), max_in_flight=0)
    runner._serdes, runner._consumer = {topic: Decoded()}, Offsets()  # type: ignore[assignment,dict-item]
    msgs = [Message(topic=topic, partition=i % 4, offset=i // 4, key=None, value=v) for i, v in enumerate(values)]
    for i in range(0, len(msgs), 1000):
        if in_line:
            runner._handle_all(msgs[i : i + 1000])
        else:
            for m, headers, d in runner._predecode(msgs[i : i + 1000]):
                runner._handle(m, headers, d)


@dataclasses.dataclass
class Floor:
    rate: float  # records/s, first record consumed to last record read (and decoded)
    thread_cpu_s: float


def floor(cfg: SinkConfig, group: str, n: int, *, decode: bool, raw_timestamps: bool) -> Floor:
    """A bare consumer with the sink's consumer settings reading the same ``n`` records from the beginning
    (fresh group): no batching, no write, no commit; ``decode``: also ``AvroSerde.decode_many`` of each
    ``consume()`` result, as the sink does. Timed from the first record to the last, like the sink."""
    from confluent_kafka import Consumer

    from core.kafka import consumer_config
    from schemas import AvroSerde

    serdes = {
        t: AvroSerde.for_topic(cfg.registry_url, t, cfg.schema_for(t), timestamps_as_int=raw_timestamps)
        for t in cfg.topics()
    }
    overrides: dict[str, Any] = {"enable.partition.eof": False}  # not an identifier: passed as **
    consumer = Consumer(consumer_config(cfg, group, **overrides))
    consumer.subscribe(cfg.topics())
    count, first, cpu0 = 0, 0.0, 0.0
    deadline = time.monotonic() + 300
    try:
        while count < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"floor read {count} of {n} records")
            msgs = consumer.consume(num_messages=1000, timeout=0.2)
            if not msgs:
                continue
            if not first:
                first, cpu0 = time.monotonic(), time.thread_time()
            values = [v for m in msgs if m.error() is None and (v := m.value())]  # ticks have no value
            if decode and values:
                decoded = serdes[str(msgs[0].topic())].decode_many(values)  # one topic in the bench
                assert not isinstance(decoded[-1], Exception), decoded[-1]
            count += len(values)
        return Floor(count / (time.monotonic() - first), time.thread_time() - cpu0)
    finally:
        consumer.close()


def floors(cfg: SinkConfig, n: int, raw_timestamps: bool) -> tuple[Floor, Floor]:
    g = cfg.group_for("sink")
    return (
        floor(cfg, f"{g}-floor-consume", n, decode=False, raw_timestamps=raw_timestamps),
        floor(cfg, f"{g}-floor-decode", n, decode=True, raw_timestamps=raw_timestamps),
    )


def steps_opensearch(cfg: OpenSearchSinkConfig, recs: list[dict]) -> None:
    """µs/record of each CPU step of the OpenSearch sink on ``recs`` (best of 3)."""
    from schemas import AvroSerde
    from sinks.flatten import record_time_us

    raw = OpenSearchSink(cfg).raw_timestamps
    serde = AvroSerde.for_topic(cfg.registry_url, cfg.topic_records, "inference_record", timestamps_as_int=raw)
    values = [serde.encode(r) for r in recs]
    n = len(values)

    def best(fn: Callable[[], Any]) -> tuple[float, Any]:
        return best_us(fn, n)

    rows: list[tuple[str, float]] = []
    us, dec = best(lambda: serde.decode_many(values))
    rows.append((f"decode (decode_many, timestamps as {'int' if raw else 'datetime'})", us))
    us, times = best(lambda: [record_time_us(d) for d in dec])
    rows.append(("record time", us))
    batch = Batch(cfg.topic_records, 0, "inference_record")
    for i, (d, t) in enumerate(zip(dec, times, strict=True)):
        batch.add(Item(i, None, values[i], [], record=d, time_us=t), t)
    us, prepared = best(lambda: prepare(cfg, batch))
    rows.append(("prepare (documents + bulk lines)", us))
    us, _ = best(lambda: [b"".join(p.lines for p in c) for c in chunks(prepared, cfg.bulk_bytes)])
    rows.append(("bulk bodies (chunks + join)", us))
    print(f"  opensearch CPU steps on {n} records (µs/record, best of 3):")
    for name, us in rows:
        print(f"    {name:<40} {us:7.1f}")


def concurrently(fn: Callable[[Any], Any], items: list[Any], threads: int) -> float:
    """Seconds to call ``fn`` on every item from ``threads`` threads (in order with one)."""
    from concurrent.futures import ThreadPoolExecutor

    started = time.monotonic()
    if threads <= 1:
        for item in items:
            fn(item)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fn, items))
    return time.monotonic() - started


def bench_s3(cfg: S3SinkConfig, n: int, in_flight: int, meter: Meter) -> tuple[Run, float, Usage, Usage]:
    s3 = make_client(cfg)
    s3.create_bucket(Bucket=cfg.s3_bucket)
    try:
        run = run_sink(cfg, S3Sink(cfg), n, in_flight, meter)
        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cfg.s3_bucket, Prefix="bench/")
            for o in page.get("Contents", [])
        ]
        blobs = [s3.get_object(Bucket=cfg.s3_bucket, Key=k)["Body"].read() for k in keys]
        puts = list(zip(keys, blobs, strict=True))
        c0 = meter.read()
        ceiling = n / concurrently(
            lambda kb: s3.put_object(Bucket=cfg.s3_bucket, Key="ceiling/" + kb[0], Body=kb[1]), puts, in_flight
        )
        store_ceiling = meter.since(c0)
        print(f"  s3: {len(keys)} objects, {sum(map(len, blobs)) / 1e6:.1f} MB")
    finally:
        # SeaweedFS keeps a bucket's volumes until the bucket is deleted: a bucket left per run used up the
        # local stack's free volumes after ~75 runs ("No writable volumes"), and then every S3 write failed
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cfg.s3_bucket):
            for o in page.get("Contents", []):
                s3.delete_object(Bucket=cfg.s3_bucket, Key=o["Key"])
        s3.delete_bucket(Bucket=cfg.s3_bucket)
    return run, ceiling, run.usage, store_ceiling


def bench_opensearch(
    cfg: OpenSearchSinkConfig, n: int, recs: list[dict], in_flight: int, meter: Meter
) -> tuple[Run, float, Usage, Usage]:
    """Sink run, ceiling rec/s, and the CPU used during each."""
    run = run_sink(cfg, OpenSearchSink(cfg), n, in_flight, meter)
    # the same documents, pre-serialized into bodies of bulk_bytes, for a fresh prefix with the same template
    ceiling_cfg = dataclasses.replace(cfg, index_prefix=cfg.index_prefix + "-ceiling")
    http = urllib3.PoolManager(retries=False, maxsize=max(1, in_flight))
    for name, tmpl in index_templates(ceiling_cfg).items():
        http.request("PUT", f"{cfg.opensearch_url}/_index_template/{name}", body=orjson.dumps(tmpl),
                     headers={"Content-Type": "application/json"})  # fmt: skip
    batch = Batch(cfg.topic_records, 0, "inference_record")
    for i, r in enumerate(recs):  # timestamps as int micros, as the sink decodes them: the same documents
        batch.add(Item(i, None, b"", [], record=r, time_us=r["event_time"]), r["event_time"])
    bodies = [b"".join(p.lines for p in c) for c in chunks(prepare(ceiling_cfg, batch), cfg.bulk_bytes)]

    def post(body: bytes) -> None:
        resp = http.request(
            "POST", f"{cfg.opensearch_url}/_bulk?filter_path=errors,items.*.status,items.*.error", body=body,
            headers={"Content-Type": "application/x-ndjson"},
        )  # fmt: skip
        assert resp.status == 200 and not orjson.loads(resp.data)["errors"]

    c0 = meter.read()
    ceiling = n / concurrently(post, bodies, in_flight)
    store_ceiling = meter.since(c0)
    print(f"  opensearch: {len(bodies)} bulk bodies, {sum(map(len, bodies)) / 1e6:.1f} MB")
    for prefix in (cfg.index_prefix, ceiling_cfg.index_prefix):
        http.request("DELETE", f"{cfg.opensearch_url}/{prefix}-records-*")
        for name in index_templates(dataclasses.replace(cfg, index_prefix=prefix)):
            http.request("DELETE", f"{cfg.opensearch_url}/_index_template/{name}")
    return run, ceiling, run.usage, store_ceiling


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=50_000, help="records to produce (default 50000)")
    ap.add_argument("--body-bytes", type=int, default=1024, help="request body size per record (default 1024)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--flush-records", type=int, default=5000, help="S3 objects and OpenSearch batches")
    ap.add_argument("--only", choices=("s3", "opensearch"), default=None)
    ap.add_argument("--default-gc", action="store_true", help="skip tune_gc() (CPython's default collector)")
    ap.add_argument(
        "--in-flight", type=int, default=None,
        help="writes in flight in the sink and concurrent requests of the ceiling (default: the sink's own "
        "max_in_flight; 0: the sink writes in its consume thread, the ceiling sends one request at a time)",
    )  # fmt: skip
    ap.add_argument("--steps", type=int, default=5000, help="records for the CPU step breakdowns (0: skip)")
    args = ap.parse_args()

    stack = load(StackConfig)
    u = uuid.uuid4().hex[:8]
    common = dict(
        partitions=args.partitions, flush_records=args.flush_records, flush_span_s=86400.0, s3_prefix="bench",
        sink_topics=f"t.records.bench{u}", flush_bytes=256 << 20,
    )  # fmt: skip
    cfg = sink_config(stack, f"bench{u}", S3SinkConfig, **common)
    search_cfg = sink_config(stack, f"bench{u}", OpenSearchSinkConfig, **common)
    create_topics(cfg)
    body = (b'{"instances": [' + b"[0.1, 0.2, 0.3, 0.4], " * (args.body_bytes // 22))[: args.body_bytes - 2] + b"]}"
    recs = []
    for i in range(args.records):
        r = make_record(i, t_us=T0_US + i * 10_000)
        r["request"] = {**r["request"], "body": body, "size": len(body)}
        recs.append(r)
    print(f"producing {args.records} records of ~{args.body_bytes} B into {args.partitions} partitions ...")
    produce(cfg, cfg.topic_records, "inference_record", recs)
    produce_ticks(cfg, cfg.topic_records, T0_US + 10**12)
    if not args.default_gc:
        tune_gc(GC_GEN0)  # as `inferlog sink …` does; also freezes the 50k produced records out of the collector's way
    rows = []
    if args.only in (None, "s3"):
        s3_cfg = dataclasses.replace(cfg, sink_group=f"bench-s3-{u}")
        n = S3Sink.max_in_flight if args.in_flight is None else args.in_flight
        run, ceiling, *store_cpu = bench_s3(s3_cfg, args.records, n, Meter(stack, "s3"))
        rows.append(
            ("s3 (parquet)", n, run, ceiling, store_cpu, floors(s3_cfg, args.records, S3Sink(s3_cfg).raw_timestamps))
        )
    if args.only in (None, "opensearch"):
        os_cfg = dataclasses.replace(search_cfg, sink_group=f"bench-os-{u}")
        n = OpenSearchSink.max_in_flight if args.in_flight is None else args.in_flight
        run, ceiling, *store_cpu = bench_opensearch(os_cfg, args.records, recs, n, Meter(stack, "opensearch"))
        fl = floors(os_cfg, args.records, OpenSearchSink(os_cfg).raw_timestamps)
        rows.append(("opensearch", n, run, ceiling, store_cpu, fl))
    if args.steps:
        if args.only in (None, "s3"):
            steps_s3(cfg, recs[: args.steps])
        if args.only in (None, "opensearch"):
            steps_opensearch(search_cfg, recs[: args.steps])
    head = f"{'sink':<14} {'in flight':>9} {'sink rec/s':>12} {'ceiling rec/s':>14} {'ratio':>7}"
    print(f"\n{head} {'µs CPU/rec thread':>18} {'process':>8} {'rec/s per core':>15}")
    for name, n, run, ceiling, _, _ in rows:
        t_us, p_us = run.thread_cpu_s / run.written * 1e6, run.process_cpu_s / run.written * 1e6
        print(
            f"{name:<14} {n:>9} {run.rate:>12,.0f} {ceiling:>14,.0f} {run.rate / ceiling:>7.2f} "
            f"{t_us:>18.1f} {p_us:>8.1f} {1e6 / p_us:>15,.0f}"
        )
    print("(in flight: sink writes in flight = concurrent ceiling requests; µs CPU/rec thread: the consume thread")
    print(" only, background writes are in 'process'; rec/s per core: records per CPU-second of the sink process)")
    for name, _, run, ceiling, (store_sink, store_ceiling), (bare, dec) in rows:
        print(f"{name}:")
        for phase, use, own in (("sink run", store_sink, "sink"), ("ceiling", store_ceiling, "client")):
            per = args.records / 1e6
            print(
                f"  CPU µs/rec during the {phase + ':':<10} {own} {use.own_s / per:6.1f}, "
                f"store {use.store_s / per:6.1f}, kafka {use.kafka_s / per:5.1f}, machine {use.machine_s / per:6.1f} "
                f"(busy {use.machine_s / use.wall_s / CPUS:4.0%} of {CPUS} cores)"
            )
        stack_sink = store_sink.own_s + store_sink.store_s + store_sink.kafka_s
        stack_ceiling = store_ceiling.own_s + store_ceiling.store_s + store_ceiling.kafka_s
        print(
            f"  co-location bound: {stack_ceiling / stack_sink:.2f} of the ceiling (sink, store and Kafka share the "
            "cores: if the ceiling saturated them, the sink cannot exceed this)"
        )
        print(
            f"  consume-only floor:   {bare.rate:>10,.0f} rec/s = {bare.rate / ceiling:5.2f} of the ceiling "
            f"({bare.thread_cpu_s / args.records * 1e6:.1f} µs CPU/rec): no sink that consumes from Kafka can "
            "exceed this"
        )
        print(
            f"  consume+decode floor: {dec.rate:>10,.0f} rec/s = {dec.rate / ceiling:5.2f} of the ceiling "
            f"({dec.thread_cpu_s / args.records * 1e6:.1f} µs CPU/rec): every sink decodes; "
            f"the sink runs at {run.rate / dec.rate:.2f} of this"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
