"""End-to-end latency of the whole local pipeline: POST → searchable in OpenSearch, POST → archived in Parquet.

Starts `inferlog run --no-stack` on the running local stack (unique topics, index prefix and groups), then for
each rate in --rates sends KServe-shaped pairs (request + response) for --seconds, and measures per inference:

- ack: POST → 202 of the response event (the ingest's durable acknowledgement; the baseline of this run);
- searchable: POST of the last event of the pair → its document is returned by an OpenSearch ids query;
- archived: POST → its join key is inside a Parquet object listed in the archive;
- joined: POST → its record is read from the records topic (a tail started with the load), which splits
  searchable into ingest + streams and sink + index refresh.

A rate is *sustained* when the load generator achieved at least 90 % of it (the ingest kept up), every
inference sent at it becomes searchable within --drain-s after the send phase, and the p99 searchable
latency of the last third of the phase is below 3x that of the first third (latency not growing without
bound). Prints a table and a JSON summary. Needs `inferlog stack start` first.

    .venv/bin/python bench/e2e.py --rates 50,100,200,400 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import multiprocessing
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# bench/ingest.py etc. would shadow the packages of the same name: drop this directory from the path, and put
# the repository root on it (bench.procstat).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from inferlog_stack.run_cli import DEMO_ENV  # noqa: E402

from bench.procstat import cpu_by_command  # noqa: E402
from core import s3  # noqa: E402
from core.config import CommonConfig, load  # noqa: E402
from ingest.demo import inference_events  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# What each process of the pipeline and the stack is called in the CPU breakdown (first match of its command line).
COMPONENTS = (
    ("inferlog.cli ingest", "ingest"),
    ("inferlog.cli streams", "streams"),
    ("inferlog.cli sink s3", "sink s3"),
    ("inferlog.cli sink opensearch", "sink opensearch"),
    ("inferlog.cli sink iceberg", "sink iceberg"),
    ("opensearch", "OpenSearch"),
    ("kafka.Kafka", "Kafka"),
    ("weed", "SeaweedFS"),
    ("quarkus", "registry"),
    ("bench/e2e.py", "bench tail + polls"),
)


def cpu_by_component() -> dict[str, float]:
    """CPU seconds (user + system, all threads) used so far by the live processes of :data:`COMPONENTS`."""
    return cpu_by_command(COMPONENTS)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@dataclasses.dataclass
class Sent:
    posted: float  # monotonic time of the last POST of the pair
    acked: float
    joined: float | None = None  # its record first read from the records topic
    produced: float | None = None  # the Kafka timestamp of that record (when streams produced it)
    searchable: float | None = None
    archived: float | None = None


class RecordsTail:
    """Reads the records topic while the load runs and notes when each join key's record first appears, to
    split POST → searchable into POST → joined (ingest + streams) and joined → searchable (sink + refresh)."""

    def __init__(self, cfg: CommonConfig) -> None:
        from confluent_kafka import Consumer

        from core.kafka import base_config

        self.first: dict[str, float] = {}
        self.produced: dict[str, float] = {}  # the record's Kafka timestamp (set by streams' producer), monotonic
        self._wall_to_mono = time.monotonic() - time.time()
        self.stop = threading.Event()
        self.consumer = Consumer(
            {
                **base_config(cfg),
                "group.id": f"bench-e2e-tail-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
            }
        )
        self.consumer.subscribe([cfg.topic_records])
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for msg in self.consumer.consume(1000, 0.05):
                key = msg.key()
                if msg.error() or key is None:
                    continue
                if self.first.setdefault(key.decode(), now := time.monotonic()) == now:
                    self.produced[key.decode()] = msg.timestamp()[1] / 1000 + self._wall_to_mono

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.consumer.close()


class Watcher:
    """Polls OpenSearch (ids query) and the archive listing for the keys sent."""

    def __init__(self, cfg: CommonConfig, index_prefix: str, archive_prefix: str) -> None:
        self.cfg, self.index_prefix, self.archive_prefix = cfg, index_prefix, archive_prefix
        self.s3 = s3.client(cfg)
        self.seen_objects: set[str] = set()

    def searchable(self, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(keys), 2000):
            body = {"size": 2000, "_source": False, "query": {"ids": {"values": keys[i : i + 2000]}}}
            req = urllib.request.Request(
                f"{self.cfg.opensearch_url}/{self.index_prefix}-records-*/_search?ignore_unavailable=true"
                "&allow_no_indices=true", data=json.dumps(body).encode(), method="POST",
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            with urllib.request.urlopen(req, timeout=30) as resp:
                found.update(h["_id"] for h in json.loads(resp.read())["hits"]["hits"])
        return found

    def archived(self) -> set[str]:
        import pyarrow.parquet as pq

        keys: set[str] = set()
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.cfg.s3_bucket, Prefix=self.archive_prefix + "/"):
            for obj in page.get("Contents", []):
                if obj["Key"] in self.seen_objects:
                    continue
                self.seen_objects.add(obj["Key"])
                data = self.s3.get_object(Bucket=self.cfg.s3_bucket, Key=obj["Key"])["Body"].read()
                keys.update(pq.read_table(io.BytesIO(data), columns=["join_key"]).column("join_key").to_pylist())
        return keys


def inferences(n: int, namespace: str) -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """The pairs one rate sends, with their join keys, each made when it is asked for (its event time is then).
    The draws do not depend on the time, so the measurement knows every key the load will send beforehand."""
    rng = random.Random(7)
    for _ in range(n):
        events = inference_events(rng, namespace)
        h = events[-1][0]
        yield f"{h['Ce-Namespace']}/{h['Ce-Inferenceservicename']}/predictor/{h['Ce-Id']}", events


async def drive(url: str, rate: float, n: int, namespace: str, start: float) -> dict[str, tuple[float, float]]:
    """Send ``n`` pairs at ``rate`` inferences/s from ``start`` (open-loop pacing); ``{key: (posted, acked)}``."""
    done: dict[str, tuple[float, float]] = {}
    conn = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def one(key: str, events: list[tuple[dict[str, str], bytes]]) -> None:
            posted = acked = 0.0
            for headers, body in events:
                posted = time.monotonic()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 202:
                        raise RuntimeError(f"ingest answered {resp.status}")
                acked = time.monotonic()
            done[key] = (posted, acked)

        tasks = []
        for i, (key, events) in enumerate(inferences(n, namespace)):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # open-loop pacing of the load, not synchronisation
            tasks.append(asyncio.create_task(one(key, events)))
        await asyncio.gather(*tasks)
    return done


def load_process(url: str, rate: float, n: int, namespace: str, start: float, out: Connection) -> None:
    """The load generator, in its own process: the measurement's polling and the records tail must not share
    an interpreter lock with it (their timestamps would wait for the load's event loop, and the reverse)."""
    try:
        done = asyncio.run(drive(url, rate, n, namespace, start))
        out.send((done, time.process_time()))
    except BaseException as exc:
        out.send(exc)
        raise


def measure(
    kind: str, watcher: Watcher, sent: dict[str, Sent], sending: threading.Event, drain_s: float, cycles: list[float]
) -> None:
    """Poll for ``kind`` ("searchable" or "archived") while the load runs (``sending`` set) and up to ``drain_s``
    after it, until every key is seen. ``sent`` holds each key with the time it is due to be posted; a key is
    looked for from then on. Appends the length of every poll cycle to ``cycles``: a key is stamped with the
    start of the poll that found it, so the cycle is the resolution of the measurement."""
    until: float | None = None
    while until is None or time.monotonic() < until:
        if until is None and not sending.is_set():
            until = time.monotonic() + drain_s
        began = time.monotonic()
        try:  # one failed poll (OpenSearch busy, an object listed before it is readable) must not end the watch
            if kind == "searchable":
                pending = [k for k, s in list(sent.items()) if s.posted <= began and s.searchable is None]
                for k in watcher.searchable(pending) if pending else ():
                    sent[k].searchable = began
            else:
                for k in watcher.archived():
                    if k in sent and sent[k].archived is None:
                        sent[k].archived = began
        except Exception as exc:
            print(f"{kind} poll failed (retrying): {type(exc).__name__}: {exc}", file=sys.stderr)
        if until is not None and all(getattr(s, kind) is not None for s in sent.values()):
            return
        # between two polls: the archive is listed whole each time, and its latency is seconds (the cuts)
        time.sleep(0.1 if kind == "searchable" else 1.0)
        cycles.append(time.monotonic() - began)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="50,100,200,400", help="inferences/s to try, comma separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="send phase per rate")
    parser.add_argument("--drain-s", type=float, default=30.0, help="time allowed after the send phase")
    parser.add_argument(
        "--timeline", type=Path, help="write each inference's times (s after the phase's start) to this JSON-lines file"
    )
    args = parser.parse_args()

    cfg = load(CommonConfig)
    run_id = uuid.uuid4().hex[:8]
    topics: dict[str, Any] = {
        f"topic_{t}": f"bench.{run_id}.{t}" for t in ("events", "records", "failures", "metadata", "deadletter")
    }
    cfg = dataclasses.replace(cfg, **topics)
    index_prefix = f"bench{run_id}"
    port, mport = _free_port(), _free_port()
    env = {**DEMO_ENV, **os.environ}  # the demo's short event-time settings, unless the environment says otherwise
    env.update({f"INFERLOG_{k.upper()}": v for k, v in topics.items()})
    env.update({"INFERLOG_INDEX_PREFIX": index_prefix, "INFERLOG_INDEX_REPLICAS": "0"})
    log = Path(tempfile.mkdtemp(prefix="inferlog-bench-e2e-")) / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inferlog.cli", "run", "--no-stack", "--ingest-port", str(port),
             "--metrics-port-base", str(mport), "--pipeline-id", f"bench-{run_id}"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    results: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 180
        while "pipeline running" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
                return 2
            time.sleep(0.3)
        watcher = Watcher(cfg, index_prefix, f"archive/{cfg.topic_records}")
        tail = RecordsTail(cfg)
        url = f"http://127.0.0.1:{port}/"
        mp = multiprocessing.get_context("spawn")
        for rate in [float(r) for r in args.rates.split(",")]:
            n, namespace = int(rate * args.seconds), f"r{int(rate)}"
            start = time.monotonic() + 1.0  # the load process's start-up must not eat into the schedule
            sent = {key: Sent(start + i / rate, 0.0) for i, (key, _) in enumerate(inferences(n, namespace))}
            sending = threading.Event()
            sending.set()
            cycles: dict[str, list[float]] = {"searchable": [], "archived": []}
            watching = [
                threading.Thread(target=measure, args=(kind, watcher, sent, sending, args.drain_s, cycles[kind]))
                for kind in cycles
            ]
            for t in watching:
                t.start()  # measures while the load runs, not after
            results_in, results_out = mp.Pipe(duplex=False)
            loader = mp.Process(target=load_process, args=(url, rate, n, namespace, start, results_out))
            loader.start()
            cpu0 = cpu_by_component()
            try:
                done = results_in.recv()  # the load sends once, when it is over (or failed)
                loader.join()
            finally:
                send_s = time.monotonic() - start
                cpu1 = cpu_by_component()
                sending.clear()
                for t in watching:
                    t.join()
            if isinstance(done, BaseException):
                raise RuntimeError(f"load generator failed: {done!r}")
            done, cpu1["bench load"] = done
            if done.keys() != sent.keys():
                raise RuntimeError("the load sent other keys than the measurement waits for")
            for key, (posted, acked) in done.items():
                sent[key].posted, sent[key].acked = posted, acked
            for key, s in sent.items():
                s.joined, s.produced = tail.first.get(key), tail.produced.get(key)
            ordered = sorted(sent.values(), key=lambda s: s.posted)
            if args.timeline:
                with args.timeline.open("a") as out:
                    for s in ordered:
                        times = {k: None if v is None else round(v - start, 3) for k, v in vars(s).items()}
                        out.write(json.dumps({"rate": rate, **times}) + "\n")
            search = [s.searchable - s.posted for s in ordered if s.searchable is not None]
            joined = [s.joined - s.posted for s in ordered if s.joined is not None]
            indexed = [s.searchable - s.joined for s in ordered if s.searchable is not None and s.joined is not None]
            third = max(1, len(ordered) // 3)
            early = [s.searchable - s.posted for s in ordered[:third] if s.searchable is not None]
            late = [s.searchable - s.posted for s in ordered[-third:] if s.searchable is not None]
            archived = [s.archived - s.posted for s in ordered if s.archived is not None]
            acks = [s.acked - s.posted for s in ordered]
            complete = len(search) == len(ordered)
            achieved = len(ordered) / send_s
            keeps_up = achieved >= 0.9 * rate  # the ingest answered fast enough to hold the offered rate
            sustained = keeps_up and complete and _pct(late, 0.99) < 3 * max(_pct(early, 0.99), 1.0)
            results.append(
                {
                    "rate_per_s": rate, "achieved_per_s": round(achieved, 1), "inferences": len(ordered),
                    "ack_p50_ms": round(_pct(acks, 0.5) * 1000, 1), "ack_p99_ms": round(_pct(acks, 0.99) * 1000, 1),
                    "searchable_p50_s": round(_pct(search, 0.5), 2), "searchable_p99_s": round(_pct(search, 0.99), 2),
                    "archived_p50_s": round(_pct(archived, 0.5), 2), "archived_p99_s": round(_pct(archived, 0.99), 2),
                    "joined_p50_s": round(_pct(joined, 0.5), 2), "joined_p99_s": round(_pct(joined, 0.99), 2),
                    "joined_to_searchable_p50_s": round(_pct(indexed, 0.5), 2),
                    "joined_to_searchable_p99_s": round(_pct(indexed, 0.99), 2),
                    "searchable": len(search), "archived": len(archived), "sustained": sustained,
                    "mean_searchable_s": round(statistics.fmean(search), 2) if search else None,
                    # the resolution of the searchable times: how long one poll of OpenSearch took
                    "searchable_poll_p50_s": round(_pct(cycles["searchable"], 0.5), 2),
                    "searchable_poll_max_s": round(max(cycles["searchable"], default=float("nan")), 2),
                    # cores each component used over the send phase
                    "cpu_cores": {k: round((v - cpu0.get(k, 0.0)) / send_s, 2) for k, v in sorted(cpu1.items())},
                }
            )  # fmt: skip
            r = results[-1]
            print(
                f"rate {rate:>6.0f}/s (achieved {r['achieved_per_s']:>6}/s): ack p50/p99 {r['ack_p50_ms']}/"
                f"{r['ack_p99_ms']} ms | searchable p50/p99 {r['searchable_p50_s']}/{r['searchable_p99_s']} s "
                f"({r['searchable']}/{r['inferences']}) = joined {r['joined_p50_s']}/{r['joined_p99_s']} s + "
                f"{r['joined_to_searchable_p50_s']}/{r['joined_to_searchable_p99_s']} s to searchable"
                f" | archived p50/p99 {r['archived_p50_s']}/"
                f"{r['archived_p99_s']} s ({r['archived']}) | sustained: {sustained}",
                flush=True,
            )
            cores = sorted(r["cpu_cores"].items(), key=lambda kv: -kv[1])
            print(f"  searchable polled every {r['searchable_poll_p50_s']} s (p50; max {r['searchable_poll_max_s']} s)")
            total = sum(r["cpu_cores"].values())
            print(f"  cores used while sending ({send_s:.0f} s, {total:.2f} of {os.cpu_count()}): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in cores), flush=True)  # fmt: skip
            if not sustained:
                break
        tail.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    best = max((r["rate_per_s"] for r in results if r["sustained"]), default=0)
    print(json.dumps({"max_sustained_rate_per_s": best, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
