"""Benchmark the ingest against the real broker, next to a no-op aiohttp handler measured in the same run.

Each server runs as its own process; this process is the load generator (a minimal keep-alive HTTP/1.1
client on raw asyncio streams, on the same event loop, so that the generator is cheaper than the servers it
measures). For each body size it measures, per server:

- the maximum rate: ``--connections`` keep-alive connections in a closed loop for ``--duration`` seconds
  → events/s, p50 and p99 latency;
- the latency at half of that maximum: an open loop at 50 % of the rate (latency counted from each
  request's scheduled time, so queueing is not hidden) → p50 and p99;
- the server's RSS (peak, from /proc), its CPU time per event (all its threads, from /proc: steadier than
  events/s on a shared machine), the load generator's CPU per event and how busy the whole machine was.

A third server, the *floor*, only produces each body to Kafka and answers after the delivery report (see
``serve_floor``): its ratio to the no-op bounds what any acknowledging ingest can reach on this machine.

The no-op baseline is served exactly like the ingest: same event loop (uvloop when installed, see
``ingest/loop.py``), same runner settings, and it reads the body the same way before answering 202. It prints
both servers' figures, the ratio ingest / no-op of events/s and the CPU ratio (no-op CPU/event / ingest
CPU/event). Requests are KServe-shaped binary-mode CloudEvents (v2 bodies of the chosen size, fresh ``Ce-Id``
each). The ingest acknowledges each one only after Kafka's delivery report (acks=all).

    .venv/bin/python bench/ingest.py                  # defaults: 1 KiB and 64 KiB, 64 connections
    .venv/bin/python bench/ingest.py --sizes 1024 --duration 10 --connections 128
    .venv/bin/python bench/ingest.py --ingest-args "--kafka-options compression.type=none"   # an ingest setting
    .venv/bin/python bench/ingest.py --tls            # HTTPS: a new TLS connection per event, as KServe's agent
    .venv/bin/python bench/ingest.py --peers benthos  # peer gateways beside the ingest (see bench/peers.py)

``--peers benthos[,strimzi]`` adds peer HTTP → Kafka gateways, each with the fair configuration of
``bench/peers.py`` (idempotent, acks=all, lz4, the CloudEvent attributes as headers, an answer after the ack),
measured with the same phases. Benthos is built from the Go module proxy on the first run and cached; the Strimzi
bridge runs only when a built distribution is there (``--strimzi-dir``), else it is skipped with one line.

Every server that writes to Kafka gets a fresh topic of its own; afterwards its records are counted there and
compared with its 2xx answers (``lost``/``extra``, both must be 0). The broker's CPU (the local stack's Kafka
JVM, from /proc) is read over each server's closed loop too: a gateway can look cheap by leaving work to the
broker (small batches, no compression). Each server's warm-up and phases share one set of keep-alive
connections, so per-connection set-up is not measured.

``--tls`` measures the ingest alone in four ways, one after the other in the same run, with ``--connections``
concurrent senders (default there 16): plain HTTP on keep-alive connections (what the agent does for ``http://``:
Go's shared default transport), plain HTTP with a new connection per event, and HTTPS with a new TCP connection
and a full TLS handshake per event (the agent makes a new transport per event for ``https://``: no reuse, no
session resumption) for an ECDSA P-256 and for an RSA-2048 certificate (throw-away ones from a local CA).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# This script is named like the ``ingest`` package: do not let its directory shadow it.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
INFERLOG = str(Path(sys.executable).parent / "inferlog")
sys.path.insert(0, str(ROOT))  # bench.peers, bench.procstat (and, in --tls, tests.support)
from bench.peers import (  # noqa: E402
    BENTHOS_VERSION,
    STRIMZI_VERSION,
    Tally,
    benthos_binary,
    benthos_command,
    benthos_config,
    build_benthos,
    count_records,
    strimzi_command,
    strimzi_config,
    strimzi_home,
    strimzi_missing,
    strimzi_request_parts,
)
from bench.procstat import rss_mib, system_busy, tree_cpu_s  # noqa: E402


# -- the baseline servers ----------------------------------------------------------------------------------------
def _serve(port: int, handler: Any, on_start: Any = None) -> None:
    """Serve ``handler`` on every path exactly like the ingest (same event loop, runner and socket settings) until
    SIGTERM; ``on_start(loop)`` runs first in the loop."""
    from aiohttp import web

    from core.runtime import tune_gc
    from ingest import loop

    async def main() -> None:
        if on_start is not None:
            on_start(asyncio.get_running_loop())
        app = web.Application(client_max_size=32 << 20)
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)  # SIGTERM ends it
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024, reuse_address=True).start()
        tune_gc()  # as the ingest's serve() does
        await asyncio.Event().wait()

    loop.run(main())


def serve_noop(port: int) -> None:
    """A no-op aiohttp handler served like the ingest: it reads the whole body the way the ingest does and
    answers 202."""
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        while await request.content.readany():
            pass
        return web.Response(status=202)

    _serve(port, handler)


def serve_floor(port: int, topic: str) -> None:
    """The least any ingest that acknowledges only durable events must do, with inferlog's own producer settings
    (idempotent, acks=all, lz4, the ingest's linger): read the body, produce it to Kafka keyed by ``Ce-Id`` (no
    headers, no parsing, no validation, no metrics, no spool), and answer 202 after the delivery report. Delivery
    reports reach the loop as in the ingest: a poll thread hands each poll's batch over in one wake-up.

    Its ratio to the no-op is the best ratio any such ingest can reach on this machine."""
    import threading

    from aiohttp import web
    from confluent_kafka import Producer

    from core.config import load
    from core.kafka import producer_config
    from ingest.config import IngestConfig

    cfg = load(IngestConfig)
    producer = Producer(producer_config(cfg, **{"linger.ms": cfg.linger_ms}))
    reports: list[tuple[asyncio.Future[None], Any]] = []

    def resolve(batch: list[tuple[asyncio.Future[None], Any]]) -> None:
        for fut, err in batch:
            if not fut.done():
                fut.set_result(None) if err is None else fut.set_exception(RuntimeError(str(err)))

    def poll(ev_loop: asyncio.AbstractEventLoop) -> None:
        nonlocal reports
        while True:
            producer.poll(0.05)
            if reports:
                batch, reports = reports, []
                ev_loop.call_soon_threadsafe(resolve, batch)

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        producer.produce(
            topic,
            key=request.headers.get("Ce-Id", ""),
            value=body,
            on_delivery=lambda err, _m: reports.append((fut, err)),
        )
        await fut
        return web.Response(status=202)

    _serve(port, handler, lambda ev_loop: threading.Thread(target=poll, args=(ev_loop,), daemon=True).start())


# -- load generation --------------------------------------------------------------------------------------------
def make_body(size: int) -> bytes:
    head = b'{"inputs":[{"name":"input-0","shape":[1,N],"datatype":"FP32","data":['
    tail = b"]}]}"
    values = []
    n = 0
    total = len(head) + len(tail)
    i = 0
    while total < size - 8:
        v = f"{(i * 7919 % 10007) / 1000:.3f}".encode()
        values.append(v)
        total += len(v) + 1
        i += 1
        n += 1
    body = head.replace(b"N", str(n).encode()) + b",".join(values) + tail
    return body + b" " * max(0, size - len(body))


def ce_attributes(ns: str) -> dict[str, str]:
    """The binary-mode CloudEvent headers KServe's logger sends, but ``Ce-Id`` (fresh for each request)."""
    return {
        "Ce-Annotations": '{"team":"bench"}',
        "Ce-Component": "predictor",
        "Ce-Endpoint": "",
        "Ce-Inferenceservicename": "bench-model",
        "Ce-Metadata": '{"X-Request-Id":["r-1"]}',
        "Ce-Namespace": ns,
        "Ce-Recordedtime": "2026-03-10T09:14:03.8150021Z",
        "Ce-Source": "http://localhost:9081/",
        "Ce-Specversion": "1.0",
        "Ce-Time": "2026-03-10T09:14:03.811983Z",
        "Ce-Type": "org.kubeflow.serving.inference.request",
    }


def request_parts(port: int, body: bytes, ns: str) -> tuple[bytes, bytes]:
    """The request bytes before and after the 36-character Ce-Id."""
    ce = "".join(f"{k}: {v}\r\n" for k, v in ce_attributes(ns).items())
    head = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Go-http-client/1.1\r\n"
        f"Content-Length: {len(body)}\r\n{ce}Content-Type: application/json\r\nCe-Id: "
    ).encode()
    return head, b"\r\n\r\n" + body


@dataclass
class Result:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int  # answers other than 2xx (the ingest answers 202, Benthos 200, the Strimzi bridge 200)
    n: int = 0  # requests answered
    ok: int = 0  # 2xx answers: what the server promised is in its topic


Pool = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


async def open_pool(port: int, connections: int) -> Pool:
    """Keep-alive connections shared by a server's warm-up and measured phases: a server that sets up state per
    connection (the Strimzi bridge opens a Kafka producer for each) does it in the warm-up, not while measured."""
    return list(await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(connections))))


def close_pool(pool: Pool) -> None:
    for _, writer in pool:
        writer.close()


def _ok(status: int) -> bool:
    return 200 <= status < 300


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> int:
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    idx = head.lower().find(b"content-length:")
    if idx >= 0:
        length = int(head[idx + 15 : head.index(b"\r\n", idx)])
        if length:
            await reader.readexactly(length)
    return status


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def closed_loop(
    port: int, parts: tuple[bytes, bytes], connections: int, duration: float, pool: Pool | None = None
) -> Result:
    """``connections`` senders back to back for ``duration`` seconds, on ``pool``'s connections if given (else
    on new ones, closed at the end)."""
    lat: list[float] = []
    errors = ok = 0
    stop = time.perf_counter() + duration
    conns = pool if pool is not None else await open_pool(port, connections)

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal errors, ok
        while time.perf_counter() < stop:
            data = parts[0] + str(uuid.uuid4()).encode() + parts[1]
            t0 = time.perf_counter()
            status = await _exchange(reader, writer, data)
            lat.append(time.perf_counter() - t0)
            ok += _ok(status)
            errors += not _ok(status)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(r, w) for r, w in conns))
    finally:
        if pool is None:
            close_pool(conns)
    elapsed = time.perf_counter() - started
    return Result(len(lat) / elapsed, _pct(lat, 0.5), _pct(lat, 0.99), errors, len(lat), ok)


async def open_loop(
    port: int, parts: tuple[bytes, bytes], connections: int, rate: float, duration: float, pool: Pool | None = None
) -> Result:
    lat: list[float] = []
    errors = ok = 0
    total = int(rate * duration)
    start = time.perf_counter() + 0.1
    next_index = 0
    conns = pool if pool is not None else await open_pool(port, connections)

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal errors, ok, next_index
        while next_index < total:
            i = next_index
            next_index += 1
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            data = parts[0] + str(uuid.uuid4()).encode() + parts[1]
            status = await _exchange(reader, writer, data)
            lat.append(time.perf_counter() - due)  # from the scheduled time: no coordinated omission
            ok += _ok(status)
            errors += not _ok(status)

    try:
        await asyncio.gather(*(worker(r, w) for r, w in conns))
    finally:
        if pool is None:
            close_pool(conns)
    return Result(rate, _pct(lat, 0.5), _pct(lat, 0.99), errors, len(lat), ok)


async def connect_loop(
    port: int, parts: tuple[bytes, bytes], senders: int, duration: float, tls: ssl.SSLContext | None
) -> Result:
    """Like :func:`closed_loop`, but every event on a new connection (TCP, and a full TLS handshake with ``tls``)."""
    lat: list[float] = []
    errors = ok = 0
    stop = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal errors, ok
        while time.perf_counter() < stop:
            data = parts[0] + str(uuid.uuid4()).encode() + parts[1]
            t0 = time.perf_counter()
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=tls, server_hostname="localhost" if tls else None
                )
                status = await _exchange(reader, writer, data)
                writer.close()
            except (OSError, asyncio.IncompleteReadError):
                status = 0
            lat.append(time.perf_counter() - t0)
            ok += _ok(status)
            errors += not _ok(status)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(senders)))
    elapsed = time.perf_counter() - started
    return Result(len(lat) / elapsed, _pct(lat, 0.5), _pct(lat, 0.99), errors, len(lat), ok)


def run_tls(args: argparse.Namespace) -> int:
    """The ingest over plain HTTP and over HTTPS with a handshake per event, ECDSA P-256 and RSA-2048."""
    from confluent_kafka.admin import AdminClient

    from core.config import CommonConfig, load
    from core.topics import TopicSpec, ensure_topics
    from ingest import loop

    sys.path.insert(0, str(ROOT))
    from tests.support.certs import CA

    common = load(CommonConfig)
    topic = f"bench.ingest.tls.{uuid.uuid4().hex[:8]}"
    ensure_topics(common, [TopicSpec(topic, common.partitions)])
    work = Path(tempfile.mkdtemp(prefix="inferlog-bench-tls-"))
    ca = CA("ec")
    client = ssl.create_default_context(cadata=ca.pem.decode())
    modes: list[tuple[str, str | None, ssl.SSLContext | None, bool]] = [
        ("http keep-alive", None, None, True),
        ("http new conn", None, None, False),
        ("https ECDSA P-256", "ec", client, False),
        ("https RSA-2048", "rsa", client, False),
    ]
    senders = args.connections if args.connections != 64 else 16
    rows: list[tuple[str, int, Result, float, float]] = []
    try:
        for size in args.sizes:
            body = make_body(size)
            for name, key_type, tls, keep_alive in modes:
                extra = shlex.split(args.ingest_args)
                if key_type is not None:
                    issued = ca.issue(key_type)  # type: ignore[arg-type]
                    cert, key = work / f"{key_type}.crt", work / f"{key_type}.key"
                    issued.write(cert, key)
                    extra += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
                port = free_port()
                proc = start_server("ingest", port, topic, str(work / "spool"), extra)
                try:
                    parts = request_parts(port, body, "bench")

                    def phase(
                        seconds: float,
                        parts: tuple[bytes, bytes] = parts,
                        port: int = port,
                        keep_alive: bool = keep_alive,
                        tls: ssl.SSLContext | None = tls,
                    ) -> Result:
                        if keep_alive:
                            return loop.run(closed_loop(port, parts, senders, seconds))
                        return loop.run(connect_loop(port, parts, senders, seconds, tls))

                    phase(min(1.0, args.duration))  # warm-up
                    cpu0, gen0 = tree_cpu_s(proc.pid), time.process_time()
                    res = phase(args.duration)
                    cpu1, gen1 = tree_cpu_s(proc.pid), time.process_time()
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
                events = max(1.0, res.rate * args.duration)
                server_us, gen_us = (cpu1 - cpu0) / events * 1e6, (gen1 - gen0) / events * 1e6
                rows.append((name, size, res, server_us, gen_us))
                print(
                    f"{name:18s} {size:>6d} B  {res.rate:7.0f} ev/s  p50 {res.p50_ms:6.2f} ms  p99 {res.p99_ms:7.2f} ms"
                    f"  server CPU {server_us:5.0f} us/event  load generator {gen_us:5.0f} us/event  "
                    f"errors {res.errors}",
                    flush=True,
                )
    finally:
        delete_topic(AdminClient({"bootstrap.servers": common.kafka_bootstrap}), topic)
    print()
    for size in args.sizes:
        base = next(r for r in rows if r[0] == "http keep-alive" and r[1] == size)
        for name, _, res, server_us, _ in (r for r in rows if r[1] == size):
            print(
                f"{size:>6d} B  {name:18s} {res.rate / base[2].rate:5.2f} x the keep-alive rate, "
                f"server CPU {server_us / base[3]:5.2f} x"
            )
    print(
        f"\n{os.cpu_count()} cores; {senders} concurrent senders; {args.duration:.0f} s per phase; TLS 1.3 (Python's "
        "defaults on both sides), no session resumption; the load generator's handshakes share the machine."
    )
    return 0


# -- servers ----------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"server on {port} did not start")


def start_process(cmd: list[str], port: int, log_file: Path, timeout_s: float = 30.0) -> subprocess.Popen[bytes]:
    """Start a server and wait for its port. Its output goes to ``log_file`` (a pipe nobody reads would block a
    chatty server once full); the log's tail is the error if it does not start."""
    with log_file.open("ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, timeout_s)
    except TimeoutError:
        proc.kill()
        proc.wait(timeout=30)
        raise RuntimeError(f"{cmd[0]} did not start:\n{log_file.read_text(errors='replace')[-2000:]}") from None
    return proc


def start_server(
    kind: str, port: int, topic: str, spool_dir: str, extra: list[str], log_file: Path | None = None
) -> subprocess.Popen[bytes]:
    if kind == "noop":
        cmd = [sys.executable, __file__, "--serve-noop", str(port)]
    elif kind == "floor":
        cmd = [sys.executable, __file__, "--serve-floor", str(port), topic]
    else:
        cmd = [
            INFERLOG,
            "ingest",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--topic-events",
            topic,
            "--spool-dir",
            spool_dir,
            "--log-level",
            "warning",
            *extra,
        ]
    return start_process(cmd, port, log_file or Path(spool_dir).parent / f"{kind}-{port}.log")


def delete_topic(admin: Any, topic: str) -> None:
    """Delete and wait: the admin request is asynchronous, and a process that exits right after it leaves the
    topic behind."""
    for fut in admin.delete_topics([topic]).values():
        fut.result(timeout=30)


def broker_pid() -> int | None:
    """The local stack's Kafka broker (its JVM: the pid file names the java process itself), to charge each
    server with the broker CPU its events cost. ``None`` when the broker was not started by the stack."""
    from inferlog_stack.manager import StackConfig
    from inferlog_stack.process import read_pid
    from inferlog_stack.servers import KafkaServer

    from core.config import load

    return read_pid(KafkaServer(load(StackConfig)).pid_file)


@dataclass
class Phases:
    """One server's load phases, all on one set of keep-alive connections."""

    warm: Result
    best: Result  # closed loop: the maximum rate
    half: Result  # open loop at half of it
    cpu_s: float  # the server's CPU over ``best``
    broker_s: float | None  # the broker's CPU over ``best``
    gen_s: float  # this process's CPU over ``best``
    busy: float  # share of the machine busy over ``best``
    rss_peak: float

    @property
    def acknowledged(self) -> int:
        return self.warm.ok + self.best.ok + self.half.ok


async def measure(
    port: int, parts: tuple[bytes, bytes], args: argparse.Namespace, pid: int, broker: int | None
) -> Phases:
    """Warm-up, the closed loop (CPU of the server and the broker read around it) and the open loop at half its
    rate. One connection set for the three: per-connection set-up stays out of the measured phases."""
    pool = await open_pool(port, args.connections)
    try:
        warm = await closed_loop(port, parts, args.connections, min(1.0, args.duration), pool)
        cpu0, gen0, sys0 = tree_cpu_s(pid), time.process_time(), system_busy()
        b0 = tree_cpu_s(broker) if broker else 0.0
        best = await closed_loop(port, parts, args.connections, args.duration, pool)
        cpu1, gen1, sys1 = tree_cpu_s(pid), time.process_time(), system_busy()
        b1 = tree_cpu_s(broker) if broker else 0.0
        half = await open_loop(port, parts, args.connections, best.rate / 2, args.duration, pool)
        _, peak = rss_mib(pid)
    finally:
        close_pool(pool)
    busy = (sys1[0] - sys0[0]) / max(1, sys1[1] - sys0[1])
    return Phases(warm, best, half, cpu1 - cpu0, (b1 - b0) if broker else None, gen1 - gen0, busy, peak)


@dataclass
class Row:
    kind: str
    size: int
    best: Result
    half: Result
    peak: float  # RSS, MiB
    cpu_us: float  # server CPU per event
    broker_us: float | None  # broker CPU per event
    tally: Tally | None  # None: the server writes no topic (no-op)


def prepare_peers(args: argparse.Namespace) -> list[str]:
    """Build or find each asked-for peer; the ones that can run, in order. Skips are one line each, not errors."""
    names = [n.strip() for n in args.peers.split(",") if n.strip()]
    unknown = sorted(set(names) - {"benthos", "strimzi"})
    if unknown:
        raise SystemExit(f"--peers: unknown {unknown}; choose from benthos, strimzi")
    ready = []
    for name in names:
        if name == "benthos":
            built = build_benthos()
            if built.build_s is None:
                noted = built.path.parent / "build-seconds"
                first = f", its cold build took {noted.read_text().strip()} s" if noted.exists() else ""
                print(f"Benthos {BENTHOS_VERSION}: cached {built.path}{first}", flush=True)
            else:
                print(f"Benthos {BENTHOS_VERSION}: cold build {built.build_s:.0f} s -> {built.path}", flush=True)
            ready.append(name)
        elif name == "strimzi":
            why = strimzi_missing(strimzi_home(args.strimzi_dir))
            if why:
                print(why, flush=True)
            else:
                ready.append(name)
    return ready


def start_peer(
    kind: str, port: int, topic: str, bootstrap: str, work: Path, args: argparse.Namespace
) -> subprocess.Popen[bytes]:
    log = work / f"{kind}-{port}.log"
    if kind == "benthos":
        conf = work / f"benthos-{port}.yaml"
        conf.write_text(benthos_config(port, topic, bootstrap))
        return start_process(benthos_command(benthos_binary(), conf), port, log)
    home = strimzi_home(args.strimzi_dir)
    conf = work / f"strimzi-{port}.properties"
    conf.write_text(strimzi_config(port, free_port(), bootstrap))
    return start_process(strimzi_command(home, conf), port, log, timeout_s=90.0)  # a JVM's start-up


def run(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import AdminClient

    from core.config import CommonConfig, load
    from core.topics import TopicSpec, ensure_topics
    from ingest import loop

    common = load(CommonConfig)
    admin = AdminClient({"bootstrap.servers": common.kafka_bootstrap})
    peers = prepare_peers(args)
    broker = broker_pid()
    if broker is None:
        print("broker CPU not measured: the Kafka broker was not started by `inferlog stack`", flush=True)
    rows: list[Row] = []
    work = Path(tempfile.mkdtemp(prefix="inferlog-bench-"))
    spool = str(work / "spool")
    kinds = ["noop", "ingest"] if args.no_floor else ["noop", "floor", "ingest"]
    kinds += [f"ingest-w{n}" for n in args.workers if n > 1]
    for size in args.sizes:
        body = make_body(size)
        for kind in [*kinds, *peers]:
            # A fresh topic per server and size: what it holds afterwards is exactly what that server wrote.
            topic = f"bench.ingest.{kind}.{size}.{uuid.uuid4().hex[:8]}"
            if kind != "noop":
                ensure_topics(common, [TopicSpec(topic, common.partitions)])
            try:
                port = free_port()
                if kind in ("benthos", "strimzi"):
                    proc = start_peer(kind, port, topic, common.kafka_bootstrap, work, args)
                else:
                    extra = shlex.split(args.ingest_args)
                    if kind.startswith("ingest-w"):
                        extra += ["--workers", kind.removeprefix("ingest-w")]
                    proc = start_server(kind, port, topic, spool, extra)
                if kind == "strimzi":
                    parts = strimzi_request_parts(port, topic, body, ce_attributes("bench"))
                else:
                    parts = request_parts(port, body, "bench")
                try:
                    ph = loop.run(measure(port, parts, args, proc.pid, broker))
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
                # After the server is gone: everything it acknowledged was acked by the broker before.
                tally = None if kind == "noop" else Tally(ph.acknowledged, count_records(common.kafka_bootstrap, topic))
            finally:
                if kind != "noop":
                    delete_topic(admin, topic)  # now, not at the end: 64 KiB runs fill gigabytes
            events = max(1, ph.best.n)
            cpu_us, gen_us = ph.cpu_s / events * 1e6, ph.gen_s / events * 1e6
            broker_us = None if ph.broker_s is None else ph.broker_s / events * 1e6
            rows.append(Row(kind, size, ph.best, ph.half, ph.rss_peak, cpu_us, broker_us, tally))
            broker_txt = "-" if broker_us is None else f"{broker_us:4.0f}"
            counted = "" if tally is None else f" | lost {tally.lost} extra {tally.extra}"
            best, half = ph.best, ph.half
            print(
                f"{kind:9s} {size:>6d} B  max {best.rate:8.0f} ev/s  p50 {best.p50_ms:6.2f} ms  "
                f"p99 {best.p99_ms:6.2f} ms | at {half.rate:6.0f} ev/s: p50 {half.p50_ms:6.2f} ms  "
                f"p99 {half.p99_ms:6.2f} ms | RSS peak {ph.rss_peak:6.1f} MiB | server CPU {cpu_us:5.0f} us/event | "
                f"broker {broker_txt} us/event | errors {best.errors + half.errors + ph.warm.errors}{counted} | "
                f"load generator {gen_us:3.0f} us/event, machine busy {ph.busy:4.0%}",
                flush=True,
            )
    print()
    print(
        f"{'body':>8s} {'ingest ev/s':>12s} {'no-op ev/s':>11s} {'ratio':>6s} {'floor ratio':>11s} "
        f"{'p99@half ingest':>16s} "
        f"{'p99@half no-op':>15s} {'RSS ingest':>11s} {'RSS no-op':>10s} {'CPU/ev ingest':>14s} {'no-op':>8s} "
        f"{'CPU ratio':>9s}"
    )
    for size in args.sizes:
        noop = next(r for r in rows if r.kind == "noop" and r.size == size)
        ing = next(r for r in rows if r.kind == "ingest" and r.size == size)
        floor = next((r for r in rows if r.kind == "floor" and r.size == size), None)
        floor_ratio = f"{floor.best.rate / noop.best.rate:>11.2f}" if floor else f"{'-':>11s}"
        print(
            f"{size:>8d} {ing.best.rate:>12.0f} {noop.best.rate:>11.0f} {ing.best.rate / noop.best.rate:>6.2f} "
            f"{floor_ratio} {ing.half.p99_ms:>13.2f} ms {noop.half.p99_ms:>12.2f} ms {ing.peak:>7.1f} MiB "
            f"{noop.peak:>6.1f} MiB {ing.cpu_us:>11.0f} us {noop.cpu_us:>5.0f} us {noop.cpu_us / ing.cpu_us:>9.2f}"
        )
    print_servers_table(rows, args.sizes)
    print_ratios(rows, args.sizes)
    flags = f"; ingest flags: {args.ingest_args}" if args.ingest_args else ""
    print(
        f"\n{os.cpu_count()} cores; {args.connections} keep-alive connections; {args.duration:.0f} s per phase; "
        f"ingest acks after Kafka's delivery report (acks=all, idempotent); servers and load generator on "
        f"{loop.name()}{flags}.\nCPU ratio = no-op CPU/event / ingest CPU/event: the throughput ratio when the "
        "server's CPU is the limit (steadier than ev/s on a shared machine).\nfloor ratio = floor ev/s / no-op ev/s, "
        "the floor being a handler that only produces the body and answers after the delivery report (no parsing, "
        "no headers, no metrics): the best ratio any ingest that acknowledges durable events can reach here."
    )
    if peers:
        print(
            "Per server: ingest/x = ingest ev/s / its ev/s (above 1: the ingest is faster); CPU x/ingest = its CPU "
            "per event / the ingest's (above 1: the ingest is cheaper), for the server alone and for server + "
            "broker.\nPeers: "
            + "; ".join(PEER_NOTES[p] for p in peers)
            + ".\nlost = 2xx answers whose record is not in the server's topic, extra = records without a 2xx "
            "answer (both must be 0)."
        )
    bad = [r for r in rows if r.tally is not None and (r.tally.lost or r.tally.extra)]
    if bad or any(r.best.errors or r.half.errors for r in rows):
        print(f"errors or lost/extra records above: the servers' logs are in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


PEER_NOTES = {
    "benthos": (
        f"Benthos {BENTHOS_VERSION} http_server -> kafka_franz (idempotent so acks=all, lz4, max_in_flight 64, key "
        "Ce-Id, murmur2_hash, Ce-* as headers; answers 200 after the ack)"
    ),
    "strimzi": (
        f"Strimzi Kafka Bridge {STRIMZI_VERSION} POST /topics/<t>, one JSON record per request (acks=all, "
        "idempotent, lz4, linger 2 ms)"
    ),
}


def print_ratios(rows: list[Row], sizes: list[int]) -> None:
    """Each ingest variant (``--workers``) against the floor and the peers of the same run: the targets."""
    others = [k for k in ("floor", "benthos", "strimzi") if any(r.kind == k for r in rows)]
    if not others:
        return
    print(f"\n{'ingest':>10s} {'body':>6s} {'ev/s':>8s} " + " ".join(f"{'÷ ' + k:>10s}" for k in others))
    for size in sizes:
        for ing in (r for r in rows if r.size == size and r.kind.startswith("ingest")):
            cells = []
            for k in others:
                ref = next(r for r in rows if r.kind == k and r.size == size)
                cells.append(f"{ing.best.rate / ref.best.rate:>10.2f}")
            print(f"{ing.kind:>10s} {size:>6d} {ing.best.rate:>8.0f} " + " ".join(cells))


def print_servers_table(rows: list[Row], sizes: list[int]) -> None:
    """Every server side by side with the ingest: closed-loop rate and latency, CPU per event of the server
    and of the broker, and the ratios."""
    print(
        f"\n{'server':>9s} {'body':>6s} {'ev/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} {'CPU us/ev':>9s} "
        f"{'broker us/ev':>12s} {'ingest/x':>8s} {'CPU x/ingest':>12s} {'+broker':>8s} {'lost':>5s} {'extra':>5s}"
    )
    for size in sizes:
        ing = next(r for r in rows if r.kind == "ingest" and r.size == size)
        for r in (r for r in rows if r.size == size):
            broker = "-" if r.broker_us is None else f"{r.broker_us:.0f}"
            both = "-"
            if r.broker_us is not None and ing.broker_us is not None:
                both = f"{(r.cpu_us + r.broker_us) / (ing.cpu_us + ing.broker_us):.2f}"
            lost, extra = ("-", "-") if r.tally is None else (str(r.tally.lost), str(r.tally.extra))
            print(
                f"{r.kind:>9s} {size:>6d} {r.best.rate:>8.0f} {r.best.p50_ms:>7.2f} {r.best.p99_ms:>7.2f} "
                f"{r.cpu_us:>9.0f} {broker:>12s} {ing.best.rate / r.best.rate:>8.2f} {r.cpu_us / ing.cpu_us:>12.2f} "
                f"{both:>8s} {lost:>5s} {extra:>5s}"
            )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1024, 65536],
        help="body sizes in bytes, comma-separated (default 1024,65536)",
    )
    p.add_argument("--connections", type=int, default=64, help="concurrent keep-alive connections (default 64)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per measured phase (default 8)")
    p.add_argument(
        "--ingest-args",
        default="",
        help='extra flags for `inferlog ingest`, e.g. "--kafka-options compression.type=none" or "--linger-ms 5"',
    )
    p.add_argument(
        "--workers",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1],
        help="ingest worker counts measured in the same run, e.g. 1,2 (`inferlog ingest --workers N`: N processes "
        "on one port); CPU and RSS are summed over a server's processes (default 1)",
    )
    p.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the floor server (the least any acknowledging ingest must do: produce + delivery report)",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="the ingest over HTTP and over HTTPS with a new TLS connection per event (ECDSA P-256, RSA-2048)",
    )
    p.add_argument(
        "--peers",
        default="",
        help="peer gateways measured beside the ingest, comma-separated: benthos (built from the Go module proxy "
        "once, then cached), strimzi (needs a built distribution, see --strimzi-dir)",
    )
    p.add_argument(
        "--strimzi-dir",
        default=None,
        help="a built Strimzi Kafka Bridge distribution (with libs/); default: the peers cache of the local stack",
    )
    p.add_argument("--serve-noop", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--serve-floor", nargs=2, metavar=("PORT", "TOPIC"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_noop:
        serve_noop(args.serve_noop)
        return 0
    if args.serve_floor:
        serve_floor(int(args.serve_floor[0]), args.serve_floor[1])
        return 0
    return run_tls(args) if args.tls else run(args)


if __name__ == "__main__":
    sys.exit(main())
