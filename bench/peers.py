"""Peer HTTP → Kafka gateways for ``bench/ingest.py``: how to get each one here, and its fair configuration.

Each peer is measured with the same load and on the same broker as the ingest, so the settings that make a
comparison fair are the ones inferlog's producer uses: idempotent, acks=all, lz4, the CloudEvent attributes as
Kafka headers, the event id as the key, and an HTTP answer only after the broker's ack (see
shared/PEER-GATEWAYS.md for where these come from).

- Benthos 4.27.0 (MIT, Go): built here from the module zip the Go module proxy serves (``go install @v4.27.0``
  fails: the proxy refuses the version list lookup), with ``-ldflags=-checklinkname=0`` (Go 1.26's linker
  otherwise rejects a ``go:linkname`` in parquet-go). The binary is cached under the local stack's directory, so
  only the first run pays for the build.
- Strimzi Kafka Bridge 1.0.0 (Apache-2.0, Java): not on Maven Central; it needs a source build, which CI cannot
  do. It is used when a built distribution is found (``--strimzi-dir`` or the cache path), and skipped with one
  line otherwise.

Run ``python bench/peers.py build-benthos`` to build (or find) the Benthos binary alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path

BENTHOS_MODULE = "github.com/benthosdev/benthos/v4"
BENTHOS_VERSION = "4.27.0"
STRIMZI_VERSION = "1.0.0"
# A cold Benthos build on 2 shared cores takes minutes; this only bounds a hung toolchain.
BUILD_TIMEOUT_S = 3600.0


def peers_dir() -> Path:
    """Where built peers are cached: beside the local stack's state (``INFERLOG_STACK_DIR``), which survives
    between runs on the same machine like the stack's other servers."""
    from inferlog_stack.manager import StackConfig

    from core.config import load

    return load(StackConfig).dir / "peers"


# -- Benthos -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Built:
    path: Path
    build_s: float | None  # None: found in the cache, nothing was built


def benthos_binary(cache: Path | None = None) -> Path:
    return (cache or peers_dir()) / f"benthos-{BENTHOS_VERSION}" / "benthos"


def build_benthos(cache: Path | None = None, log: bool = True) -> Built:
    """The Benthos binary, built once: ``go mod download -json`` of the exact module version (the proxy serves
    the zip), a writable copy of its ``Dir`` (the module cache is read-only), ``go build ./cmd/benthos`` there.
    The binary is written beside and renamed into place, so an interrupted build never leaves a binary that
    looks cached."""
    binary = benthos_binary(cache)
    if binary.exists():
        return Built(binary, None)
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("Go not found: Benthos is built from the Go module proxy with the go tool")
    home = binary.parent
    home.mkdir(parents=True, exist_ok=True)
    # GOTOOLCHAIN=local: build with the installed Go rather than let a go.mod line fetch another toolchain.
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    t0 = time.monotonic()
    if log:
        print(f"building Benthos {BENTHOS_VERSION} into {home} (first run only) ...", file=sys.stderr, flush=True)
    dl = subprocess.run(
        [go, "mod", "download", "-json", f"{BENTHOS_MODULE}@v{BENTHOS_VERSION}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=BUILD_TIMEOUT_S,
    )
    if dl.returncode != 0:
        raise RuntimeError(f"go mod download {BENTHOS_MODULE}@v{BENTHOS_VERSION} failed:\n{dl.stdout}{dl.stderr}")
    src_dir = Path(json.loads(dl.stdout)["Dir"])
    src = home / "src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(src_dir, src)
    for d, _, files in os.walk(src):  # the module cache's files are read-only; the copy must be removable
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    partial = home / "benthos.partial"
    res = subprocess.run(
        [go, "build", "-trimpath", "-ldflags=-checklinkname=0", "-o", str(partial), "./cmd/benthos"],
        cwd=src,
        capture_output=True,
        text=True,
        env=env,
        timeout=BUILD_TIMEOUT_S,
    )
    if res.returncode != 0:
        raise RuntimeError(f"go build ./cmd/benthos failed:\n{res.stdout[-4000:]}{res.stderr[-4000:]}")
    partial.rename(binary)
    shutil.rmtree(src, ignore_errors=True)  # 100+ MB of sources; the binary is all the bench needs
    took = time.monotonic() - t0
    (home / "build-seconds").write_text(f"{took:.1f}\n")
    return Built(binary, took)


def benthos_config(port: int, topic: str, bootstrap: str) -> str:
    """The fair Benthos pipeline: ``http_server`` (its own listener on ``port``, POST ``/``) → ``kafka_franz``.

    The input resolves each request's transaction only after the output's ``ProduceSync`` returns, so the 200
    answer follows the broker's ack, like the ingest's 202. ``idempotent_write`` implies acks=all. JSON is valid
    YAML, and ``json.dumps`` quotes every string, so the interpolation ``${! meta("Ce-Id") }`` needs no
    YAML escaping."""
    seeds = [b.strip() for b in bootstrap.split(",") if b.strip()]
    config = {
        # Benthos' own HTTP server (metrics, ping) is off: the input has its own address, and the default port
        # 4195 could clash with another run.
        "http": {"enabled": False},
        "input": {
            "http_server": {
                "address": f"127.0.0.1:{port}",
                "path": "/",
                "allowed_verbs": ["POST"],
                "timeout": "10s",
            }
        },
        "output": {
            "kafka_franz": {
                "seed_brokers": seeds,
                "topic": topic,
                "key": '${! meta("Ce-Id") }',
                "partitioner": "murmur2_hash",
                "compression": "lz4",
                "idempotent_write": True,
                "max_in_flight": 64,
                "metadata": {"include_prefixes": ["Ce-"]},
            }
        },
        "logger": {"level": "WARN"},
        "metrics": {"none": {}},
    }
    return json.dumps(config, indent=2) + "\n"


def benthos_command(binary: Path, config_file: Path) -> list[str]:
    return [str(binary), "-c", str(config_file)]


# -- Strimzi Kafka Bridge -----------------------------------------------------------------------------------------
def strimzi_home(configured: str | None = None, cache: Path | None = None) -> Path:
    """Where a built bridge distribution (its ``libs/`` of jars) is looked for: ``--strimzi-dir``, else the peers
    cache. (Not an ``INFERLOG_*`` variable: the settings loader rejects names it does not know.)"""
    if configured:
        return Path(configured)
    return (cache or peers_dir()) / f"strimzi-kafka-bridge-{STRIMZI_VERSION}"


def strimzi_missing(home: Path) -> str | None:
    """Why the bridge cannot run from ``home`` (``None``: it can)."""
    if not (home / "libs").is_dir() or not any((home / "libs").glob("kafka-bridge-*.jar")):
        return (
            f"Strimzi Kafka Bridge {STRIMZI_VERSION} skipped: no built distribution at {home} "
            "(libs/kafka-bridge-*.jar). "
            "It is not on Maven Central; it needs a source build of tag 1.0.0 with -Dvertx.version=5.0.8 "
            "(see shared/PEER-GATEWAYS.md), then unpack it there or pass --strimzi-dir"
        )
    if shutil.which("java") is None:
        return "Strimzi Kafka Bridge skipped: no java on PATH"
    return None


def strimzi_config(port: int, management_port: int, bootstrap: str) -> str:
    """The fair bridge configuration: producer acks=all, idempotent, lz4, a 2 ms linger (as the ingest's)."""
    lines = [
        "bridge.id=inferlog-bench",
        f"kafka.bootstrap.servers={bootstrap}",
        "kafka.producer.acks=all",
        "kafka.producer.enable.idempotence=true",
        "kafka.producer.compression.type=lz4",
        "kafka.producer.linger.ms=2",
        "http.enabled=true",
        "http.host=127.0.0.1",
        f"http.port={port}",
        f"http.management.port={management_port}",
    ]
    return "\n".join(lines) + "\n"


def strimzi_command(home: Path, config_file: Path) -> list[str]:
    java = shutil.which("java") or "java"
    return [
        java,
        "-Xmx512m",
        "-cp",
        str(home / "libs" / "*"),
        "io.strimzi.kafka.bridge.Application",
        f"--config-file={config_file}",
    ]


def strimzi_request_parts(port: int, topic: str, body: bytes, headers: dict[str, str]) -> tuple[bytes, bytes]:
    """A bridge request carrying one KServe event: ``POST /topics/<t>`` with one record (KServe sends one event
    per POST) whose key is the event id, value the JSON body, and the other CloudEvent attributes as headers
    (the bridge's JSON format wants header values base64). Split around the 36-character id like the
    load generator's other requests, so the Content-Length is known beforehand."""
    hdrs = ",".join(f'{{"key":{json.dumps(k)},"value":"{b64encode(v.encode()).decode()}"}}' for k, v in headers.items())
    before = b'{"records":[{"key":"'
    after = b'","value":' + body.strip() + b',"headers":[' + hdrs.encode() + b"]}]}"
    length = len(before) + 36 + len(after)
    head = (
        f"POST /topics/{topic} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/vnd.kafka.json.v2+json"
        f"\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    return head + before, after


# -- counting what reached the topic ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Tally:
    acknowledged: int  # 2xx answers
    in_topic: int  # records found in the topic

    @property
    def lost(self) -> int:
        """Acknowledged but not in the topic."""
        return max(0, self.acknowledged - self.in_topic)

    @property
    def extra(self) -> int:
        """In the topic without a 2xx answer (a timeout that was delivered after all, or a duplicate)."""
        return max(0, self.in_topic - self.acknowledged)


def count_records(bootstrap: str, topic: str, timeout_s: float = 120.0) -> int:
    """Records in ``topic`` up to its high watermarks, read one by one (not high - low: an idempotent or
    transactional producer's control records and aborted batches take offsets too)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-count-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise RuntimeError(f"topic {topic!r}: {meta.error}")
        tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in tps}
        consumer.assign([TopicPartition(topic, tp.partition, OFFSET_BEGINNING) for tp in tps])
        done = dict.fromkeys(ends, 0)
        count = 0
        deadline = time.monotonic() + timeout_s
        while any(done[p] < ends[p] for p in ends):
            if time.monotonic() >= deadline:
                short = {p: f"{done[p]}/{ends[p]}" for p in ends if done[p] < ends[p]}
                raise TimeoutError(f"{topic}: not read to its end within {timeout_s:g}s ({short})")
            for msg in consumer.consume(10000, 0.2):
                if msg.error() is not None:
                    raise RuntimeError(f"{topic}: {msg.error()}")
                p, offset = int(msg.partition() or 0), int(msg.offset() or 0)
                if offset < ends[p]:
                    count += 1
                done[p] = max(done[p], offset + 1)
            for tp in consumer.position(tps):  # past control records at a partition's end
                if tp.offset >= 0:
                    done[tp.partition] = max(done[tp.partition], tp.offset)
        return count
    finally:
        consumer.close()


def main() -> int:
    if sys.argv[1:] != ["build-benthos"]:
        print("usage: bench/peers.py build-benthos", file=sys.stderr)
        return 2
    built = build_benthos()
    took = "cached" if built.build_s is None else f"built in {built.build_s:.0f} s"
    print(f"{built.path} ({took})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
