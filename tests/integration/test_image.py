"""The image itself, built here without Docker (deploy/build-image.sh: buildah on a base made from Debian's
packages) and run with buildah's chroot isolation as uid 10001: the CLI, what the image carries, and the ingest
answering /healthz and writing a KServe event into the local Kafka with its spool on a mounted directory.

Built once per test session. buildah's chroot isolation keeps the host's network, so the ingest inside and the
local stack meet on 127.0.0.1."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from core.config import CommonConfig
from core.retry import wait_until
from tests.integration.test_ingest_contract import consume, ingest_config
from tests.integration.test_ingest_faults import free_port
from tests.support import ingest_examples as examples
from tests.unit.test_lock import locked

ROOT = Path(__file__).resolve().parents[2]
TAG = "localhost/inferlog:test"
UID = 10001
BUILD_TIMEOUT_S = 540  # a cold build (base from Debian packages + the image) took ~2 min on 2 cores

pytestmark = [pytest.mark.integration]

_missing = [tool for tool in ("buildah", "mmdebstrap") if shutil.which(tool) is None]
if _missing:
    pytest.skip(
        f"{' and '.join(_missing)} not installed: the image is built with buildah on a base made by mmdebstrap "
        "(apt-get install -y buildah mmdebstrap; `make test` installs them)",
        allow_module_level=True,
    )
if os.geteuid() != 0:
    pytest.skip("building the image needs root (mmdebstrap's root mode, buildah's storage)", allow_module_level=True)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    log = tmp_path_factory.mktemp("image") / "build.log"
    t0 = time.monotonic()
    with open(log, "wb") as out:
        rc = subprocess.run(
            ["bash", str(ROOT / "deploy" / "build-image.sh"), TAG],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        ).returncode
    tail = log.read_text(errors="replace")[-4000:]
    assert rc == 0, f"deploy/build-image.sh failed ({rc}):\n{tail}"
    print(f"image {TAG} built in {time.monotonic() - t0:.0f}s")
    return TAG


@pytest.fixture
def container(image: str) -> Iterator[str]:
    name = f"inferlog-test-{uuid.uuid4().hex[:10]}"
    subprocess.run(["buildah", "from", "--quiet", "--name", name, image], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["buildah", "rm", name], check=False, capture_output=True)


def run_args(container: str, *volumes: str) -> list[str]:
    vols = [arg for v in volumes for arg in ("--volume", v)]
    return ["buildah", "run", "--isolation", "chroot", "--user", f"{UID}:{UID}", *vols, container, "--"]


def run_in(container: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*run_args(container), *cmd], capture_output=True, text=True, timeout=60, check=False)


def test_inferlog_version_as_uid_10001(container: str) -> None:
    got = run_in(container, "inferlog", "--version")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == f"inferlog {importlib.metadata.version('inferlog')}"
    ident = run_in(container, "id", "-u")
    assert ident.stdout.strip() == str(UID), ident


def test_the_image_carries_the_lock_and_inferlog_only(container: str) -> None:
    """Exactly requirements.lock's pins plus inferlog (and the venv's own pip/setuptools): no dev extras, no
    test code, no build tree."""
    script = (
        "import importlib.metadata as m, importlib.util as u, json, os;"
        "print(json.dumps({'dists': sorted({(d.metadata['Name'], d.version) for d in m.distributions()}),"
        "'tests': u.find_spec('tests') is not None, 'src': os.path.exists('/src')}))"
    )
    got = run_in(container, "/opt/inferlog/bin/python", "-c", script)
    assert got.returncode == 0, got.stderr
    report = json.loads(got.stdout)
    installed: dict[str, str] = {str(canonicalize_name(name)): version for name, version in report["dists"]}
    assert installed.pop("inferlog") == importlib.metadata.version("inferlog")
    for venv_own in ("pip", "setuptools"):
        installed.pop(venv_own, None)
    assert installed == {name: str(version) for name, (version, _) in locked().items()}
    assert not report["tests"] and not report["src"]
    for dev_tool in ("pytest", "mypy", "ruff", "hypothesis"):
        assert dev_tool not in installed


def test_the_build_machines_own_cas_stay_out_of_the_image(container: str) -> None:
    """The build bind-mounts this machine's CA bundle for pip (a TLS-inspecting proxy's CA among them); the
    image must trust only Debian's CAs."""
    bundle = run_in(container, "cat", "/etc/ssl/certs/ca-certificates.crt")
    assert bundle.returncode == 0 and "BEGIN CERTIFICATE" in bundle.stdout, bundle.stderr
    local = Path("/usr/local/share/ca-certificates")
    for crt in sorted(local.glob("**/*.crt")) if local.is_dir() else []:
        body = "".join(crt.read_text().split("-----")[2].split())  # the base64 between BEGIN and END
        assert body not in "".join(bundle.stdout.split()), f"{crt} is in the image's CA bundle"


@contextlib.contextmanager
def image_ingest(container: str, args: list[str], spool: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        # its own process group: buildah run, its chroot runtime and inferlog are stopped together
        proc = subprocess.Popen(
            [*run_args(container, f"{spool}:/spool"), "inferlog", "ingest", "--spool-dir", "/spool", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def healthz(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
        return bool(resp.status == 200)


def test_ingest_in_the_image_writes_a_kserve_event_to_kafka(
    container: str, stack: CommonConfig, unique: str, tmp_path: Path
) -> None:
    cfg = ingest_config(stack, unique, tmp_path)
    spool = tmp_path / "spool-volume"
    spool.mkdir()
    os.chown(spool, UID, UID)
    port = free_port()
    log = tmp_path / "ingest.log"
    args = ["--host", "127.0.0.1", "--port", str(port), "--kafka-bootstrap", cfg.kafka_bootstrap,
            "--topic-events", cfg.topic_events, "--topic-deadletter", cfg.topic_deadletter,
            "--no-create-topics", "--log-format", "text"]  # fmt: skip
    with image_ingest(container, args, spool, log) as proc:

        def up() -> bool:
            assert proc.poll() is None, f"the ingest exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            return healthz(port)

        wait_until(up, timeout_s=60, what="the image's ingest answering /healthz")
        ex = examples.A_REQUEST
        req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=ex.body, method="POST", headers=dict(ex.headers))
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 202, resp.read()
        # the spool lives on the mounted directory, written by the image's user
        segments = list(spool.iterdir())
        assert segments and all(s.stat().st_uid == UID for s in segments), segments
    (msg,) = consume(cfg, cfg.topic_events)
    (exp,) = ex.expected
    assert msg.key().decode() == exp.key
    assert {k: v.decode() for k, v in msg.headers() or []} == exp.headers
    assert msg.value() == exp.value
