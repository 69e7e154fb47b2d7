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
each). The ingest acknowledges each one only after Kafka's delivery report (acks=all). The topic is created
for the run and deleted afterwards.

    .venv/bin/python bench/ingest.py                  # defaults: 1 KiB and 64 KiB, 64 connections
    .venv/bin/python bench/ingest.py --sizes 1024 --duration 10 --connections 128
    .venv/bin/python bench/ingest.py --ingest-args "--kafka-options compression.type=none"   # an ingest setting
    .venv/bin/python bench/ingest.py --tls            # HTTPS: a new TLS connection per event, as KServe's agent

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


def request_parts(port: int, body: bytes, ns: str) -> tuple[bytes, bytes]:
    """The request bytes before and after the 36-character Ce-Id."""
    head = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Go-http-client/1.1\r\n"
        f'Content-Length: {len(body)}\r\nCe-Annotations: {{"team":"bench"}}\r\nCe-Component: predictor\r\n'
        "Ce-Endpoint: \r\nCe-Inferenceservicename: bench-model\r\n"
        f'Ce-Metadata: {{"X-Request-Id":["r-1"]}}\r\nCe-Namespace: {ns}\r\n'
        "Ce-Recordedtime: 2026-03-10T09:14:03.8150021Z\r\nCe-Source: http://localhost:9081/\r\n"
        "Ce-Specversion: 1.0\r\nCe-Time: 2026-03-10T09:14:03.811983Z\r\n"
        "Ce-Type: org.kubeflow.serving.inference.request\r\nContent-Type: application/json\r\nCe-Id: "
    ).encode()
    return head, b"\r\n\r\n" + body


@dataclass
class Result:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int


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


async def closed_loop(port: int, parts: tuple[bytes, bytes], connections: int, duration: float) -> Result:
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop:
                data = parts[0] + str(uuid.uuid4()).encode() + parts[1]
                t0 = time.perf_counter()
                status = await _exchange(reader, writer, data)
                lat.append(time.perf_counter() - t0)
                errors += status != 202
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return Result(len(lat) / elapsed, _pct(lat, 0.5), _pct(lat, 0.99), errors)


async def open_loop(port: int, parts: tuple[bytes, bytes], connections: int, rate: float, duration: float) -> Result:
    lat: list[float] = []
    errors = 0
    total = int(rate * duration)
    start = time.perf_counter() + 0.1
    next_index = 0

    async def worker() -> None:
        nonlocal errors, next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
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
                errors += status != 202
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return Result(rate, _pct(lat, 0.5), _pct(lat, 0.99), errors)


async def connect_loop(
    port: int, parts: tuple[bytes, bytes], senders: int, duration: float, tls: ssl.SSLContext | None
) -> Result:
    """Like :func:`closed_loop`, but every event on a new connection (TCP, and a full TLS handshake with ``tls``)."""
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal errors
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
            errors += status != 202

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(senders)))
    elapsed = time.perf_counter() - started
    return Result(len(lat) / elapsed, _pct(lat, 0.5), _pct(lat, 0.99), errors)


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
                    cpu0, gen0 = cpu_seconds(proc.pid), time.process_time()
                    res = phase(args.duration)
                    cpu1, gen1 = cpu_seconds(proc.pid), time.process_time()
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
        AdminClient({"bootstrap.servers": common.kafka_bootstrap}).delete_topics([topic])
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


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB."""
    cur = peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cur, peak


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, to show how contended a phase was."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(f) - f[3] - f[4], sum(f)


def start_server(kind: str, port: int, topic: str, spool_dir: str, extra: list[str]) -> subprocess.Popen[bytes]:
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
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port)
    except TimeoutError:
        proc.kill()
        raise RuntimeError((proc.stderr.read() if proc.stderr else b"").decode()[-2000:]) from None
    return proc


def run(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import AdminClient

    from core.config import CommonConfig, load
    from core.topics import TopicSpec, ensure_topics
    from ingest import loop

    common = load(CommonConfig)
    topic = f"bench.ingest.{uuid.uuid4().hex[:8]}"
    ensure_topics(common, [TopicSpec(topic, common.partitions)])
    rows: list[tuple[str, int, Result, Result, float, float]] = []
    spool = tempfile.mkdtemp(prefix="inferlog-bench-spool-")
    try:
        for size in args.sizes:
            body = make_body(size)
            for kind in ("noop", "ingest") if args.no_floor else ("noop", "floor", "ingest"):
                port = free_port()
                proc = start_server(kind, port, topic, spool, shlex.split(args.ingest_args))
                try:
                    parts = request_parts(port, body, "bench")
                    loop.run(closed_loop(port, parts, args.connections, min(1.0, args.duration)))  # warm-up
                    cpu0, gen0, sys0 = cpu_seconds(proc.pid), time.process_time(), system_busy()
                    best = loop.run(closed_loop(port, parts, args.connections, args.duration))
                    cpu1, gen1, sys1 = cpu_seconds(proc.pid), time.process_time(), system_busy()
                    events = best.rate * args.duration
                    cpu_us = (cpu1 - cpu0) / events * 1e6
                    gen_us = (gen1 - gen0) / events * 1e6
                    busy = (sys1[0] - sys0[0]) / max(1, sys1[1] - sys0[1])
                    half = loop.run(open_loop(port, parts, args.connections, best.rate / 2, args.duration))
                    _, peak = rss_mib(proc.pid)
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
                rows.append((kind, size, best, half, peak, cpu_us))
                print(
                    f"{kind:6s} {size:>6d} B  max {best.rate:8.0f} ev/s  p50 {best.p50_ms:6.2f} ms  "
                    f"p99 {best.p99_ms:6.2f} ms | at {half.rate:6.0f} ev/s: p50 {half.p50_ms:6.2f} ms  "
                    f"p99 {half.p99_ms:6.2f} ms | RSS peak {peak:6.1f} MiB | server CPU {cpu_us:5.0f} us/event | "
                    f"errors {best.errors + half.errors} | load generator {gen_us:3.0f} us/event, machine busy "
                    f"{busy:4.0%}",
                    flush=True,
                )
    finally:
        AdminClient({"bootstrap.servers": common.kafka_bootstrap}).delete_topics([topic])
    print()
    print(
        f"{'body':>8s} {'ingest ev/s':>12s} {'no-op ev/s':>11s} {'ratio':>6s} {'floor ratio':>11s} "
        f"{'p99@half ingest':>16s} "
        f"{'p99@half no-op':>15s} {'RSS ingest':>11s} {'RSS no-op':>10s} {'CPU/ev ingest':>14s} {'no-op':>8s} "
        f"{'CPU ratio':>9s}"
    )
    for size in args.sizes:
        noop = next(r for r in rows if r[0] == "noop" and r[1] == size)
        ing = next(r for r in rows if r[0] == "ingest" and r[1] == size)
        floor = next((r for r in rows if r[0] == "floor" and r[1] == size), None)
        floor_ratio = f"{floor[2].rate / noop[2].rate:>11.2f}" if floor else f"{'-':>11s}"
        print(
            f"{size:>8d} {ing[2].rate:>12.0f} {noop[2].rate:>11.0f} {ing[2].rate / noop[2].rate:>6.2f} {floor_ratio} "
            f"{ing[3].p99_ms:>13.2f} ms {noop[3].p99_ms:>12.2f} ms {ing[4]:>7.1f} MiB {noop[4]:>6.1f} MiB "
            f"{ing[5]:>11.0f} us {noop[5]:>5.0f} us {noop[5] / ing[5]:>9.2f}"
        )
    flags = f"; ingest flags: {args.ingest_args}" if args.ingest_args else ""
    print(
        f"\n{os.cpu_count()} cores; {args.connections} keep-alive connections; {args.duration:.0f} s per phase; "
        f"ingest acks after Kafka's delivery report (acks=all, idempotent); servers and load generator on "
        f"{loop.name()}{flags}.\nCPU ratio = no-op CPU/event / ingest CPU/event: the throughput ratio when the "
        "server's CPU is the limit (steadier than ev/s on a shared machine).\nfloor ratio = floor ev/s / no-op ev/s, "
        "the floor being a handler that only produces the body and answers after the delivery report (no parsing, "
        "no headers, no metrics): the best ratio any ingest that acknowledges durable events can reach here."
    )
    return 0


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
        "--no-floor",
        action="store_true",
        help="skip the floor server (the least any acknowledging ingest must do: produce + delivery report)",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="the ingest over HTTP and over HTTPS with a new TLS connection per event (ECDSA P-256, RSA-2048)",
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
