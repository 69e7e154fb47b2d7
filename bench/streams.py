"""Benchmark the streams join worker against a raw aiokafka consume->produce loop over the same data.

Preloads N pairs (request + response, ~1 KiB bodies) into a fresh events topic on the real broker, then:

1. baseline: one asyncio aiokafka loop reads every event and produces it to a scratch topic (no join, no
   state, no Avro), timed from its first to its last produced record;
2. streams: one ``inferlog streams`` worker (subprocess, fresh app id) joins the same events; a tailing
   consumer times the first to the last keyed record on the records topic.

3. with ``--faust-floor``: an EMPTY Faust agent (same broker settings, raw serializers, no table, no output)
   iterates the same events in a subprocess: the ceiling of any per-event Faust agent on this machine.

Prints pairs/s of each and the ratios. Usage: ``.venv/bin/python bench/streams.py --pairs 20000 --faust-floor``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

# This script is named like the ``streams`` package: keep its own directory off the import path, and put the
# repository root on it (the harness lives in the tests' support code).
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(_here), *(p for p in sys.path if os.path.abspath(p or ".") != _here)]

from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from bench.procstat import cpu_s  # noqa: E402
from core.config import CommonConfig, load  # noqa: E402
from core.topics import TopicSpec, ensure_topics  # noqa: E402
from tests.support import streams_harness as T  # noqa: E402


def events(n: int) -> list[object]:
    # valid JSON of ~1 KiB each (a truncated body would be "unparseable" and add a failure signal per pair)
    body = b'{"instances": [[' + b", ".join(b"%.6f" % (i / 7) for i in range(100)) + b"]]}"
    out: list[object] = []
    for i in range(n):
        req, resp = T.pair(f"bench-{i}", T.BASE_US + i * 200)
        req = req.__class__(**{**req.__dict__, "data": body})
        resp = resp.__class__(**{**resp.__dict__, "data": b'{"predictions": [' + b"1, " * 335 + b"1]}"})
        out += [req, resp]
    return out


CPU: dict[str, float] = {}


async def raw_loop(cfg: T.StreamsConfig, total: int, out_topic: str) -> float:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka import TopicPartition as ATP

    consumer = AIOKafkaConsumer(bootstrap_servers=cfg.kafka_bootstrap, group_id=None, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=cfg.kafka_bootstrap, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        parts = [ATP(cfg.topic_events, p) for p in range(cfg.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        done = 0
        first = 0.0
        while done < total:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            for tp, records in batch.items():
                for rec in records:
                    await producer.send(
                        out_topic, rec.value, key=rec.key, partition=tp.partition, headers=list(rec.headers)
                    )
                    if done == 0:
                        first = time.monotonic()
                        cpu0 = time.process_time()
                    done += 1
        await producer.flush()
        CPU["raw"] = time.process_time() - cpu0
        return time.monotonic() - first
    finally:
        await consumer.stop()
        await producer.stop()


FLOOR = r"""
import asyncio, os, signal, sys, tempfile, time
import faust
bootstrap, topic, extra, n, parts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
wired = sys.argv[6] == "wired"
conf = dict(broker=f"kafka://{bootstrap}", datadir=tempfile.mkdtemp(), topic_partitions=parts,
            topic_replication_factor=1, web_enabled=False, autodiscover=False, consumer_auto_offset_reset="earliest",
            table_standby_replicas=0, stream_buffer_maxsize=16384)
if wired:  # the worker's Faust wiring (streams.app), still no work per event
    from streams.transport import WorkerApp
    app = WorkerApp(f"floorw-{topic}", fetch_wait_s=float(sys.argv[7]), store="rocksdb://", **conf)
    src = app.topic(topic, extra, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    app.Table("pending", default=None, partitions=parts, key_type=bytes, value_type=bytes)
else:
    app = faust.App(f"floor-{topic}", store="memory://", **conf)
    src = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
seen = [0, 0.0]
held, lock, every = [], asyncio.Lock(), int(sys.argv[8]) if wired else 0
def count():
    if seen[0] == 0:
        seen[1] = time.monotonic()
        seen.append(time.thread_time())
    seen[0] += 1
    if seen[0] >= n:
        print(f"FLOOR {time.monotonic() - seen[1]:.6f} {time.thread_time() - seen[2]:.6f}", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
@app.agent(src, concurrency=1)
async def empty(stream):
    if not wired:
        async for _ in stream.events():
            count()
        return
    manual = stream.noack()  # acked in groups after a barrier, as the worker does
    async for ev in manual.events():
        async with lock:
            held.append(ev)
            if len(held) >= every or seen[0] + 1 >= n:
                for e in held:
                    await manual.ack(e)
                held.clear()
        count()
faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()
"""


def faust_floor(cfg: T.StreamsConfig, events_n: int, timeout_s: float, *, wired: bool = False) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the event-loop thread) of an empty Faust agent over the events. ``wired``:
    with the worker's Faust wiring (its app class and fetch wait, the events and expiry topics as one source, the
    RocksDB join table with its changelog, manual acks in groups of ``state_flush_events`` under a lock), which
    any Faust join that makes its outputs durable before its state and its state before the offset needs."""
    import subprocess

    args = [cfg.kafka_bootstrap, cfg.topic_events, cfg.topic_expiry, str(events_n), str(cfg.partitions)]
    args += ["wired", str(cfg.fetch_wait_s), str(cfg.state_flush_events)] if wired else ["plain"]
    out = subprocess.run(
        [sys.executable, "-c", FLOOR, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=os.path.dirname(_here),
    )
    for line in (out.stdout + out.stderr).splitlines():  # Faust's worker redirects stdout to its log
        if "FLOOR " in line:
            wall, cpu = line.split("FLOOR ", 1)[1].split()[:2]
            return float(wall), float(cpu)
    raise SystemExit(f"empty Faust agent did not finish: {out.stderr[-2000:]}")


def join_work_cpu(cfg: T.StreamsConfig, evs: list[object]) -> float:
    """CPU seconds per pair of the worker's own per-event work, in this process without Kafka or Faust: decode
    the Kafka record (``from_kafka``), join (state in a dict), enrich, Avro-encode the outputs. No state write,
    no produce, no Faust: what every pair costs on top of the empty Faust agent, at the least."""
    from core.events import from_kafka, to_kafka
    from schemas import AvroSerde
    from streams import enrich
    from streams.app import Emitter, MetadataTable
    from streams.join import Joiner

    msgs = [to_kafka(ev) for ev in evs]  # type: ignore[arg-type]
    serdes = []
    for topic, name in ((cfg.topic_records, "inference_record"), (cfg.topic_failures, "failure_signal")):
        serde = AvroSerde.for_topic(cfg.registry_url, topic, name)
        serde.register()
        serdes.append(serde)
    best = float("inf")
    for _ in range(3):
        state: dict[str, bytes] = {}
        joiner = Joiner(state, pair_timeout_us=30_000_000, done_retention_us=3_600_000_000, tick_interval_us=60_000_000)
        emitter = Emitter(cfg, serdes[0], serdes[1], MetadataTable(cfg))
        c0 = time.thread_time()
        for off, (_key, headers, value) in enumerate(msgs):
            ev = from_kafka(headers, value)
            side = enrich.Side(ev, 0, off, enrich.event_time_us(ev, 0))
            emitter.messages(joiner.on_event(side), 0)
        best = min(best, time.thread_time() - c0)
    return best / (len(msgs) / 2)


def time_worker(cfg: T.StreamsConfig, n: int, timeout_s: float) -> float:
    consumer = Consumer(
        {"bootstrap.servers": cfg.kafka_bootstrap, "group.id": f"bench-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(cfg.topic_records, p, 0) for p in range(cfg.partitions)])
    with T.running_worker(cfg, "bench", wait=False) as w:
        pid = w.proc.pid
        got = 0
        first = last = 0.0
        cpu0 = main0 = 0.0
        deadline = time.monotonic() + timeout_s
        while got < n and time.monotonic() < deadline:
            for msg in consumer.consume(10000, 0.2):
                if msg.error() or msg.key() is None:
                    continue
                now = time.monotonic()
                if not first:
                    first, cpu0, main0 = now, cpu_s(pid), cpu_s(pid, pid)
                last = now
                got += 1
        CPU["worker"], CPU["worker_main"] = cpu_s(pid) - cpu0, cpu_s(pid, pid) - main0
    consumer.close()
    if got < n:
        raise SystemExit(f"worker produced {got}/{n} records within {timeout_s}s")
    return last - first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=20000, help="pairs to preload (default 20000)")
    ap.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    ap.add_argument(
        "--faust-floor", action="store_true", help="also time an empty Faust agent over the same events (the ceiling)"
    )
    args = ap.parse_args()
    u = uuid.uuid4().hex[:8]
    cfg = T.streams_config(load(CommonConfig), f"bench{u}", standby_replicas=0, idle_timeout_s=600.0)
    T.create_topics(cfg)
    scratch = f"t.bench.raw.{u}"
    ensure_topics(cfg, [TopicSpec(scratch, cfg.partitions)])
    t0 = time.monotonic()
    evs = events(args.pairs)
    T.produce(cfg, evs)  # type: ignore[arg-type]
    print(f"preloaded {args.pairs} pairs ({2 * args.pairs} events, ~1 KiB bodies) in {time.monotonic() - t0:.1f}s")
    raw_s = asyncio.run(raw_loop(cfg, 2 * args.pairs, scratch))
    raw_rate = args.pairs / raw_s
    print(
        f"raw aiokafka consume->produce: {2 * args.pairs} events in {raw_s:.2f}s = {raw_rate:,.0f} pairs/s, "
        f"{CPU['raw'] / args.pairs * 1e6:,.0f} µs CPU/pair"
    )
    worker_s = time_worker(cfg, args.pairs, args.timeout)
    rate = args.pairs / worker_s
    print(
        f"streams worker (join+enrich+Avro): {args.pairs} records in {worker_s:.2f}s = {rate:,.0f} pairs/s, "
        f"{CPU['worker'] / args.pairs * 1e6:,.0f} µs CPU/pair ({CPU['worker_main'] / args.pairs * 1e6:,.0f} in the "
        f"event-loop thread: the bound of one worker is {args.pairs / max(CPU['worker_main'], 1e-9):,.0f} pairs/s)"
    )
    print(f"ratio streams/raw = {rate / raw_rate:.2f} (target >= 0.5); target >= 5,000 pairs/s: {rate >= 5000}")
    if args.faust_floor:
        floor_s, floor_cpu = faust_floor(cfg, 2 * args.pairs, args.timeout)
        floor_rate = args.pairs / floor_s
        print(
            f"empty Faust agent (no work at all): {floor_rate:,.0f} pairs/s, {floor_cpu / args.pairs * 1e6:,.0f} µs "
            f"CPU/pair in the event-loop thread = {floor_rate / raw_rate:.2f} of raw; "
            f"streams worker = {rate / floor_rate:.2f} of the empty agent"
        )
        join_s = join_work_cpu(cfg, evs[: min(len(evs), 10_000)])
        bound = 1 / (floor_cpu / args.pairs + join_s)
        print(
            f"the join's own work (decode, join, enrich, Avro; no Kafka, no state writes, no produce): "
            f"{join_s * 1e6:,.0f} µs CPU/pair; with the empty agent's {floor_cpu / args.pairs * 1e6:,.0f} µs, one "
            f"Faust worker on this machine is bound at {bound:,.0f} pairs/s = {bound / raw_rate:.2f} of raw; "
            f"streams worker = {rate / bound:.2f} of the bound"
        )
        wired_s, wired_cpu = faust_floor(cfg, 2 * args.pairs, args.timeout, wired=True)
        wired_bound = 1 / (wired_cpu / args.pairs + join_s)
        print(
            f"empty Faust agent with the worker's wiring (two source topics, RocksDB table, fetch wait, manual "
            f"acks after a barrier): {args.pairs / wired_s:,.0f} pairs/s, {wired_cpu / args.pairs * 1e6:,.0f} µs "
            f"CPU/pair; with the join's own work bound at {wired_bound:,.0f} pairs/s = {wired_bound / bound:.2f} of "
            f"the bound; streams worker = {rate / wired_bound:.2f} of it"
        )


if __name__ == "__main__":
    main()
