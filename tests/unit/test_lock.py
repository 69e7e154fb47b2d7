"""requirements.lock (what the image installs, hashed) agrees with pyproject's [project.dependencies]."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
# The image: CPython 3.11 on linux x86_64 (deploy/Dockerfile, python:3.11-slim).
TARGET = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython"}  # fmt: skip
REGENERATE = "make lock"


def locked() -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, hashes) of every requirement in the lock."""
    text = re.sub(r"\\\n\s*", " ", LOCK.read_text())
    out: dict[str, tuple[Version, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split(" --")
        req = Requirement(spec.strip())
        (pin,) = req.specifier
        assert pin.operator == "==", f"requirements.lock: {line[:80]} is not an exact pin"
        out[canonicalize_name(req.name)] = (Version(pin.version), [o for o in options if o.startswith("hash=")])
    return out


def dependencies() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(d) for d in project["dependencies"]]


def test_the_lock_pins_every_runtime_dependency_within_its_specifier() -> None:
    pins = locked()
    problems = []
    for req in dependencies():
        if req.marker is not None and not req.marker.evaluate(TARGET):
            continue
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req.name} is not in requirements.lock")
        elif not req.specifier.contains(pins[name][0], prereleases=True):
            problems.append(f"{req.name}=={pins[name][0]} does not satisfy {req}")
    assert not problems, f"run `{REGENERATE}`: " + "; ".join(problems)


def test_every_pin_is_hashed_and_the_lock_says_how_to_regenerate_it() -> None:
    pins = locked()
    assert len(pins) > len(dependencies())  # the transitive dependencies are pinned too
    unhashed = sorted(name for name, (_, hashes) in pins.items() if not hashes)
    assert not unhashed, f"pins without --hash (pip --require-hashes refuses them): {unhashed}"
    assert REGENERATE in LOCK.read_text().split("\n", 3)[1], "the lock's header names the command that made it"
    assert "\nlock:" in (ROOT / "Makefile").read_text()


def test_what_the_extras_of_the_dependencies_bring_is_locked_too() -> None:
    """e.g. confluent-kafka[avro,schemaregistry], faust-streaming[rocksdict], aiokafka[lz4], read from the
    installed distributions' metadata (of the version locked: the dev venv may be elsewhere)."""
    pins = locked()
    missing, checked = [], 0
    for req in dependencies():
        if not req.extras:
            continue
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            continue
        pin = pins.get(canonicalize_name(req.name))
        if pin is None or Version(dist.version) != pin[0]:
            continue  # not locked (the test above says so), or the venv has another version
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if sub.marker is not None and not any(sub.marker.evaluate({**TARGET, "extra": e}) for e in req.extras):
                continue  # another extra's, or not on the target
            checked += 1
            if canonicalize_name(sub.name) not in pins:
                missing.append(f"{sub.name} (from {req.name}[{','.join(sorted(req.extras))}])")
    assert checked, "no extra was checked: is the dev venv installed?"
    assert not missing, f"run `{REGENERATE}`: not locked: {missing}"
