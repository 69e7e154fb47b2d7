"""The Kubernetes deployment (deploy/k8s): render every overlay with a real kustomize and check the output.

What is checked, per overlay: no ``exec`` anywhere (probes and lifecycle hooks are httpGet/sleep); every
container has httpGet liveness and readiness probes whose ports are its own container ports; Services select
pods and their target ports exist; all inferlog containers run one image, set by the overlay; every container
has resource requests; Prometheus annotations name the port that serves ``/metrics``; the ``INFERLOG_*``
variables each container gets are declared settings of its component and load and validate; the container
arguments parse with the real ``inferlog`` CLI; the ingest's spool and the streams worker's state sit on
per-pod volumes, the spool cap fits its volume and the grace period covers preStop + shutdown; the Strimzi
topics agree with ``core.topics.topic_specs`` and the Kafka bootstrap address; and the example
InferenceService's ``logger.url`` resolves to the ingest Service (name, namespace, port, target port).

kustomize: ``INFERLOG_KUSTOMIZE`` (a binary), else a pinned kustomize cached in ``~/.cache/inferlog/``, built
once with ``go install`` from the Go module proxy (about a minute on 2 cores), else ``kubectl kustomize``.
No cluster is needed; nothing here talks to the local stack.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from core import config
from core.config import CommonConfig

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "production")
KSERVE_EXAMPLE = K8S / "examples" / "kserve"
APP_NAMESPACE = "inferlog"
# The one Secret production expects to exist already (deploy/README.md says how to create it).
EXTERNAL_SECRETS = {"production": {"inferlog-credentials"}}

KUSTOMIZE_VERSION = "v5.7.1"  # the newest v5 that builds with Go 1.26 (v5.8 needs Go 1.27)
KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"


# --------------------------------------------------------------------------------------------- kustomize


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inferlog" / f"kustomize-{KUSTOMIZE_VERSION}"


def _go_install(dest: Path) -> None:
    """Build the pinned kustomize into ``dest`` with a private, throw-away module and build cache."""
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise RuntimeError("no go toolchain on PATH")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix="build-") as tmp:
        env = {
            **os.environ,
            "GOBIN": f"{tmp}/bin",
            "GOPATH": f"{tmp}/gopath",
            "GOMODCACHE": f"{tmp}/mod",
            "GOCACHE": f"{tmp}/cache",
            "GOFLAGS": "-modcacherw",  # so the temporary module cache can be deleted
            "GOTOOLCHAIN": "local",
            "CGO_ENABLED": "0",
        }
        proc = subprocess.run(
            [go, "install", "-trimpath", "-ldflags=-s -w", f"{KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"go install {KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION} failed: {proc.stderr[-2000:]}")
        os.replace(f"{tmp}/bin/kustomize", dest)


def _kubectl_kustomize() -> list[str] | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    proc = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode == 0 and re.search(r"Kustomize Version: v5\.", proc.stdout):
        return [kubectl, "kustomize"]
    return None


@pytest.fixture(scope="module")
def kustomize() -> list[str]:
    """The command that renders a kustomization directory to YAML on stdout."""
    override = os.environ.get("INFERLOG_KUSTOMIZE")
    if override:
        return [override, "build"]
    binary = _cache_dir() / "kustomize"
    errors: list[str] = []
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        with open(binary.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time; the others wait, then reuse it
            if not binary.exists():
                try:
                    _go_install(binary)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                    errors.append(str(exc))
    if binary.exists():
        return [str(binary), "build"]
    fallback = _kubectl_kustomize()
    if fallback is not None:
        return fallback
    pytest.fail(
        "no kustomize: set INFERLOG_KUSTOMIZE, install Go (for go install), or kubectl with kustomize v5: "
        + "; ".join(errors)
    )


def render(cmd: list[str], path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"kustomize build {path.relative_to(ROOT)} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


# ------------------------------------------------------------------------------------------ the render


@dataclass
class Workload:
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace", ""))

    @property
    def pod(self) -> dict[str, Any]:
        return dict(self.obj["spec"]["template"])

    @property
    def pod_spec(self) -> dict[str, Any]:
        return dict(self.pod["spec"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.pod["metadata"].get("labels", {}))

    @property
    def containers(self) -> list[dict[str, Any]]:
        return [*self.pod_spec.get("initContainers", []), *self.pod_spec["containers"]]


@dataclass
class Render:
    overlay: str
    objects: list[dict[str, Any]]
    by_key: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for obj in self.objects:
            key = (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            assert key not in self.by_key, f"{self.overlay}: duplicate object {key}"
            self.by_key[key] = obj

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.by_key.get((kind, namespace, name))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    @property
    def workloads(self) -> list[Workload]:
        return [Workload(o) for o in self.objects if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]

    def inferlog_containers(self) -> Iterator[tuple[Workload, dict[str, Any]]]:
        for w in self.workloads:
            for c in w.pod_spec["containers"]:
                if c.get("args", [None])[0] in ("ingest", "streams", "sink"):
                    yield w, c

    def ingest(self) -> tuple[Workload, dict[str, Any]]:
        found = [(w, c) for w, c in self.inferlog_containers() if c["args"][0] == "ingest"]
        assert len(found) == 1, f"{self.overlay}: expected one ingest workload, found {len(found)}"
        return found[0]


@pytest.fixture(scope="module")
def renders(kustomize: list[str]) -> dict[str, Render]:
    return {overlay: Render(overlay, render(kustomize, K8S / "overlays" / overlay)) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def kserve_example(kustomize: list[str]) -> list[dict[str, Any]]:
    return render(kustomize, KSERVE_EXAMPLE)


@pytest.fixture(params=OVERLAYS)
def r(request: pytest.FixtureRequest, renders: dict[str, Render]) -> Render:
    return renders[request.param]


# ------------------------------------------------------------------------------------------- helpers


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, str(k), v
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def _port_of(container: dict[str, Any], port: int | str) -> dict[str, Any] | None:
    for p in container.get("ports", []):
        if port in (p.get("name"), p["containerPort"]):
            return dict(p)
    return None


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value: str | int | float) -> float:
    m = _QUANTITY.match(str(value))
    assert m and m.group(2) in _SUFFIX, f"not a Kubernetes quantity: {value!r}"
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def _config_class(args: list[str]) -> type[CommonConfig] | None:
    """The settings class of the component a container runs (None: that component is not built yet)."""
    module, attr = {"ingest": ("ingest.config", "IngestConfig"), "streams": ("streams.config", "StreamsConfig")}.get(
        args[0], ("sinks.config", "SinkConfig")
    )
    if importlib.util.find_spec(module) is None:
        return None
    cls = getattr(importlib.import_module(module), attr, None)
    return cls if isinstance(cls, type) and issubclass(cls, CommonConfig) else None


def container_env(r: Render, w: Workload, c: dict[str, Any]) -> dict[str, str]:
    """The environment the container starts with (envFrom, then env). Secrets missing from the render (the
    ones production takes from a secret manager) contribute placeholders for their documented keys."""
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            cm = r.get("ConfigMap", w.namespace, src["configMapRef"]["name"])
            assert cm is not None, f"{r.overlay}/{w.name}: ConfigMap {src['configMapRef']['name']} not in the render"
            env.update(cm.get("data", {}))
        elif "secretRef" in src:
            name = src["secretRef"]["name"]
            secret = r.get("Secret", w.namespace, name)
            if secret is None:
                assert name in EXTERNAL_SECRETS.get(r.overlay, set()), f"{r.overlay}/{w.name}: Secret {name} missing"
                env.update(dict.fromkeys(SECRET_KEYS, "from-secret-manager"))
            else:
                env.update(dict.fromkeys(secret.get("data", {}), "secret"))
                env.update(secret.get("stringData", {}))
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            env[item["name"]] = "from-ref"
    return env


SECRET_KEYS = ("INFERLOG_S3_ACCESS_KEY", "INFERLOG_S3_SECRET_KEY", "INFERLOG_OPENSEARCH_PASSWORD")


def _app_config(r: Render) -> CommonConfig:
    """The common settings as the pods get them (the ingest's environment)."""
    w, c = r.ingest()
    return config.load(CommonConfig, env=container_env(r, w, c))


def canonical_header(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey, which KServe's agent matches metadataHeaders against."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


# --------------------------------------------------------------------------------------------- tests


def test_overlays_render_the_whole_pipeline(r: Render) -> None:
    kinds = {w.kind for w, _ in r.inferlog_containers()}
    commands = sorted(" ".join(c["args"]) for _, c in r.inferlog_containers())
    assert commands == ["ingest", "sink opensearch", "sink s3", "streams"], f"{r.overlay}: {commands}"
    assert kinds == {"StatefulSet", "Deployment"}
    assert all(w.namespace == APP_NAMESPACE for w, _ in r.inferlog_containers())
    assert r.get("Namespace", "", APP_NAMESPACE) is not None
    assert r.of_kind("Kafka") and r.of_kind("KafkaNodePool") and len(r.of_kind("KafkaTopic")) == 5


def test_no_exec_anywhere_and_every_probe_is_httpget(r: Render) -> None:
    execs = [f"{o['kind']}/{o['metadata']['name']}{path}" for o in r.objects for path, k, _ in _walk(o) if k == "exec"]
    assert not execs, f"{r.overlay}: exec found at {execs}"
    for w in r.workloads:
        for c in w.containers:
            where = f"{r.overlay}/{w.name}/{c['name']}"
            for probe in ("livenessProbe", "readinessProbe"):
                assert probe in c, f"{where}: no {probe}"
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe in c:
                    assert set(c[probe]) & {"httpGet", "tcpSocket", "grpc", "exec"} == {"httpGet"}, (where, probe)
                    port = c[probe]["httpGet"]["port"]
                    assert _port_of(c, port) is not None, f"{where}: {probe} port {port!r} is not a container port"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", where
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", where
            for hook in c.get("lifecycle", {}).values():
                assert set(hook) <= {"httpGet", "sleep"}, f"{where}: lifecycle hook {hook}"


def test_services_select_pods_and_target_container_ports(r: Render) -> None:
    services = [s for s in r.of_kind("Service") if s["metadata"]["namespace"] == APP_NAMESPACE]
    assert services
    for svc in services:
        selector = svc["spec"]["selector"]
        selected = [w for w in r.workloads if w.namespace == APP_NAMESPACE and selector.items() <= w.labels.items()]
        # one component per Service: a selector reaching across components would mix ingest and metrics pods
        assert len(selected) == 1, (
            f"{r.overlay}: Service {svc['metadata']['name']} selects {[w.name for w in selected]}"
        )
        for w in selected:
            for port in svc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                assert any(_port_of(c, target) for c in w.pod_spec["containers"]), (
                    f"{r.overlay}: Service {svc['metadata']['name']} port {port['port']} → {target!r} "
                    f"is no container port of {w.name}"
                )
    for w in r.workloads:
        if w.kind == "StatefulSet":
            headless = r.get("Service", w.namespace, w.obj["spec"]["serviceName"])
            assert headless is not None, f"{w.name}: no headless serviceName"
            assert headless["spec"].get("clusterIP") == "None", f"{w.name}: no headless serviceName"
            assert headless["spec"]["selector"].items() <= w.labels.items()


def test_one_image_for_all_inferlog_containers_set_by_the_overlay(r: Render) -> None:
    images = {c["image"] for _, c in r.inferlog_containers()}
    assert len(images) == 1, f"{r.overlay}: containers disagree on the image: {images}"
    image = images.pop()
    name, _, tag = image.rpartition(":")
    assert "/" in name and tag and tag != "latest", f"{r.overlay}: image {image!r} is not a pinned registry image"
    kustomization = yaml.safe_load((K8S / "overlays" / r.overlay / "kustomization.yaml").read_text())
    wanted = {f"{i['newName']}:{i['newTag']}" for i in kustomization.get("images", []) if i["name"] == "inferlog"}
    assert wanted == {image}, f"{r.overlay}: the overlay's images entry {wanted} did not take effect ({image})"


def test_every_container_has_requests_and_memory_limits(r: Render) -> None:
    for w in r.workloads:
        for c in w.containers:
            res = c.get("resources", {})
            where = f"{r.overlay}/{w.name}/{c['name']}"
            assert {"cpu", "memory"} <= set(res.get("requests", {})), f"{where}: requests {res.get('requests')}"
            assert "memory" in res.get("limits", {}), f"{where}: no memory limit"
            for kind, limit in res["limits"].items():
                assert quantity(limit) >= quantity(res["requests"][kind]), f"{where}: {kind} limit < request"


def test_prometheus_annotations_name_the_metrics_port(r: Render) -> None:
    for w, c in r.inferlog_containers():
        ann = w.pod["metadata"].get("annotations", {})
        assert ann.get("prometheus.io/scrape") == "true", w.name
        assert ann.get("prometheus.io/path") == "/metrics", w.name
        port = _port_of(c, int(ann["prometheus.io/port"]))
        assert port is not None, f"{r.overlay}/{w.name}: prometheus.io/port is not a container port"
        # the port that is scraped is the port the probes check: one HTTP server per process
        assert _port_of(c, c["livenessProbe"]["httpGet"]["port"]) == port, w.name


def test_env_is_declared_settings_that_validate_and_ports_agree(r: Render) -> None:
    checked = 0
    for w, c in r.inferlog_containers():
        env = container_env(r, w, c)
        names = {k for k in env if k.startswith(config.ENV_PREFIX)}
        cls = _config_class(c["args"])
        if cls is None:  # that component is not built yet
            continue
        declared = {config.env_name(f.name) for f in dataclasses.fields(cls)}
        assert not names - declared, f"{r.overlay}/{w.name}: not settings of {cls.__name__}: {sorted(names - declared)}"
        cfg = config.load(cls, env=env)
        # the process listens where the container port, the probes and the Service point
        port_field = {"ingest": "port", "streams": "metrics_port"}.get(c["args"][0], "sink_metrics_port")
        port_name = "http" if c["args"][0] == "ingest" else "metrics"
        declared_port = _port_of(c, port_name)
        assert declared_port is not None, f"{w.name}: no container port named {port_name}"
        assert getattr(cfg, port_field) == declared_port["containerPort"], (
            f"{r.overlay}/{w.name}: {config.env_name(port_field)}={getattr(cfg, port_field)} but the container "
            f"port is {declared_port['containerPort']}"
        )
        checked += 1
    assert checked >= 1  # the ingest at least


def test_container_args_parse_with_the_real_cli(r: Render) -> None:
    from inferlog.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    registered = set(sub.choices)
    for w, c in r.inferlog_containers():
        if c["args"][0] not in registered:
            continue  # that component's CLI is not built yet
        try:
            args = parser.parse_args(c["args"])
        except SystemExit as exc:
            pytest.fail(f"{r.overlay}/{w.name}: `inferlog {' '.join(c['args'])}` does not parse ({exc})")
        assert callable(args.handler)


def test_state_on_per_pod_volumes_and_graceful_shutdown_fits(r: Render) -> None:
    settings = {"ingest": "INFERLOG_SPOOL_DIR", "streams": "INFERLOG_STORE_DIR"}
    for w, c in r.inferlog_containers():
        env = container_env(r, w, c)
        setting_name = settings.get(c["args"][0])
        if setting_name is None:
            continue
        assert w.kind == "StatefulSet", f"{w.name}: local state needs a StatefulSet (a volume per pod)"
        claims = {t["metadata"]["name"]: t for t in w.obj["spec"]["volumeClaimTemplates"]}
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        mount = mounts.get(env[setting_name])
        assert mount in claims, f"{r.overlay}/{w.name}: {setting_name}={env[setting_name]} is not on a claim"
        size = quantity(claims[mount]["spec"]["resources"]["requests"]["storage"])
        if c["args"][0] == "ingest":
            cap = int(env["INFERLOG_SPOOL_MAX_BYTES"])
            assert cap <= 0.9 * size, f"{r.overlay}: spool cap {cap} does not leave 10% of the {size:.0f}-byte volume"
            # preStop sleep + the ingest's own drain must end before the kubelet's SIGKILL
            pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
            shutdown = float(env["INFERLOG_SHUTDOWN_TIMEOUT_S"])
            grace = w.pod_spec["terminationGracePeriodSeconds"]
            assert grace >= pre_stop + shutdown + 5, f"{r.overlay}: grace {grace}s < {pre_stop}+{shutdown}+5"


def test_kafka_topics_and_bootstrap_agree_with_the_settings(r: Render) -> None:
    from core.topics import topic_specs

    cfg = _app_config(r)
    (kafka,) = r.of_kind("Kafka")
    kafka_ns = kafka["metadata"]["namespace"]
    brokers = sum(
        p["spec"]["replicas"]
        for p in r.of_kind("KafkaNodePool")
        if "broker" in p["spec"]["roles"] and p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    )
    plain = [x for x in kafka["spec"]["kafka"]["listeners"] if not x["tls"] and x["type"] == "internal"]
    bootstrap = f"{kafka['metadata']['name']}-kafka-bootstrap.{kafka_ns}.svc.cluster.local:{plain[0]['port']}"
    assert cfg.kafka_bootstrap == bootstrap, f"{r.overlay}: INFERLOG_KAFKA_BOOTSTRAP={cfg.kafka_bootstrap}"

    topics = {t["spec"]["topicName"]: t for t in r.of_kind("KafkaTopic")}
    specs = topic_specs(cfg)
    assert set(topics) == {s.name for s in specs}
    for spec in specs:
        t = topics[spec.name]
        where = f"{r.overlay}: KafkaTopic {spec.name}"
        assert t["metadata"]["namespace"] == kafka_ns, where
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"], where
        assert t["spec"]["partitions"] == spec.partitions, where
        assert t["spec"]["replicas"] == cfg.replication_factor <= brokers, where
        topic_config = {k: str(v) for k, v in t["spec"].get("config", {}).items()}
        assert spec.config.items() <= topic_config.items(), f"{where}: {topic_config} lacks {spec.config}"
        assert int(topic_config.get("min.insync.replicas", 1)) <= max(1, t["spec"]["replicas"] - 1) or (
            t["spec"]["replicas"] == 1
        ), f"{where}: min.insync.replicas leaves no broker to lose"
    assert topics[cfg.topic_metadata]["spec"]["config"]["cleanup.policy"] == "compact"
    assert {topics[n]["spec"]["partitions"] for n in (cfg.topic_events, cfg.topic_records, cfg.topic_failures)} == {12}


def _logger_specs(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
    out = []
    for isvc in (o for o in objects if o["kind"] == "InferenceService"):
        for component in ("predictor", "transformer", "explainer"):
            logger = isvc["spec"].get(component, {}).get("logger")
            if logger:
                out.append((isvc, component, logger))
    return out


def test_logger_url_resolves_to_the_ingest_service(r: Render, kserve_example: list[dict[str, Any]]) -> None:
    loggers = _logger_specs(r.objects) or _logger_specs(kserve_example)
    assert loggers, "no InferenceService with a logger"
    w, c = r.ingest()
    ingest_cfg = config.load(_config_class(["ingest"]) or CommonConfig, env=container_env(r, w, c))
    for isvc, component, logger in loggers:
        where = f"{r.overlay}: {isvc['metadata']['name']}.{component}.logger"
        assert logger["mode"] == "all", where
        url = urlsplit(logger["url"])
        assert url.scheme == "http" and url.path == "/", f"{where}: {logger['url']}"
        host = (url.hostname or "").split(".")
        assert len(host) >= 2 and host[2:] in ([], ["svc"], ["svc", "cluster", "local"]), f"{where}: not a Service"
        svc = r.get("Service", host[1], host[0])
        assert svc is not None, f"{where}: no Service {host[0]} in namespace {host[1]}"
        ports = [p for p in svc["spec"]["ports"] if p["port"] == (url.port or 80)]
        assert ports, f"{where}: Service {host[0]} has no port {url.port or 80}"
        assert svc["spec"]["selector"].items() <= w.labels.items(), f"{where}: {host[0]} does not select the ingest"
        target = _port_of(c, ports[0].get("targetPort", ports[0]["port"]))
        assert target is not None and target["containerPort"] == getattr(ingest_cfg, "port", 8080), where
        # KServe matches headers against Go's canonical names; annotation values with commas kill the agent
        for header in logger.get("metadataHeaders", []):
            assert header == canonical_header(header), (
                f"{where}: {header!r} never matches, use {canonical_header(header)!r}"
            )
        annotations = isvc["metadata"].get("annotations", {})
        for key in logger.get("metadataAnnotations", []):
            assert key in annotations, f"{where}: metadataAnnotations names {key!r}, which the ISVC does not have"
            assert "," not in annotations[key], f"{where}: annotation {key} has a comma"
        assert logger.get("metadataHeaders") and logger.get("metadataAnnotations"), where


def test_canonical_header_matches_go() -> None:
    assert canonical_header("x-request-id") == "X-Request-Id"
    assert canonical_header("traceparent") == "Traceparent"
    assert canonical_header("X-B3-TraceId") == "X-B3-Traceid"


def test_quantity() -> None:
    assert quantity("250m") == 0.25
    assert quantity("2Gi") == 2 * 2**30
    assert quantity(1) == 1
    with pytest.raises(AssertionError):
        quantity("1 Gi")
