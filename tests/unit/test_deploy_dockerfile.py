"""deploy/Dockerfile agrees with the project and with the Kubernetes manifests (no Docker daemon needed)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
IGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
BASE = ROOT / "deploy" / "k8s" / "base"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def pod_specs() -> list[dict[str, Any]]:
    specs = []
    for path in sorted(BASE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("Deployment", "StatefulSet"):
                specs.append(doc["spec"]["template"]["spec"])
    assert len(specs) == 4  # ingest, streams, sink-s3, sink-opensearch
    return specs


def test_python_311_slim_and_inferlog_entrypoint() -> None:
    """Both stages start from the build argument BASE, python:3.11-slim unless deploy/build-image.sh passes its
    own Debian-built base; the argument is declared before the first FROM, where FROM can read it."""
    ins = instructions()
    first_from = next(i for i, (word, _) in enumerate(ins) if word == "FROM")
    global_args = dict(args.partition("=")[::2] for word, args in ins[:first_from] if word == "ARG")
    assert global_args.get("BASE") == "python:3.11-slim", global_args
    froms = [args.split()[0] for word, args in ins if word == "FROM"]
    assert len(froms) == 2 and all(f == "${BASE}" for f in froms), froms
    (entrypoint,) = [args for word, args in ins if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["inferlog"]  # exec form: inferlog is PID 1 and gets SIGTERM itself
    assert any(word == "RUN" and "pip install" in args and " ." in args for word, args in ins)


def test_dependencies_install_from_the_hashed_lock_and_inferlog_without_resolving() -> None:
    """The image gets requirements.lock's exact, hashed versions (tests/unit/test_lock.py checks that the lock
    covers pyproject's dependencies); inferlog itself is installed with --no-deps, so nothing else comes in."""
    ins = instructions()
    runs = [args for word, args in ins if word == "RUN"]
    installs = [cmd.strip() for args in runs for cmd in args.split("&&") if "pip install" in cmd]
    from_lock = [c for c in installs if "-r requirements.lock" in c]
    assert len(from_lock) == 1 and "--require-hashes" in from_lock[0], installs
    (project,) = [c for c in installs if c.endswith(" .")]
    assert "--no-deps" in project, f"inferlog must not resolve its own dependencies: {project}"
    assert installs.index(from_lock[0]) < installs.index(project)
    assert all(c in (from_lock[0], project) or "--upgrade pip" in c for c in installs), installs
    copies = [args.split() for word, args in ins if word == "COPY" and not args.startswith("--from")]
    assert any("requirements.lock" in c[:-1] for c in copies)
    assert any("pip check" in args for args in runs)


def test_copies_every_package_of_the_distribution() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set()
    for word, args in instructions():
        if word == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
                copied.add(src.rstrip("/"))
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"
    assert {"pyproject.toml", "requirements.lock", project["project"]["readme"]} <= copied
    # and the build context lets them through
    allowed = {line[1:].rstrip("/") for line in IGNORE.read_text().splitlines() if line.startswith("!")}
    assert copied <= allowed, f"excluded from the build context: {copied - allowed}"


def test_user_and_ports_match_the_manifests() -> None:
    ins = instructions()
    (user,) = [args for word, args in ins if word == "USER"]
    uid, _, gid = user.partition(":")
    exposed = {int(p) for word, args in ins if word == "EXPOSE" for p in args.split()}
    for spec in pod_specs():
        ctx = spec["securityContext"]
        assert ctx["runAsNonRoot"] is True
        assert str(ctx["runAsUser"]) == uid and str(ctx["runAsGroup"]) == gid
        for c in spec["containers"]:
            assert c["image"] == "inferlog"  # the overlays map this name to the built image
            assert {p["containerPort"] for p in c["ports"]} <= exposed
