"""Settings classes: secrets stay out of repr/str, and an unknown INFERLOG_* variable stops a process at load()."""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core import config
from core.config import CommonConfig, ConfigError

ROOT = Path(__file__).resolve().parents[2]
# Where the INFERLOG_* names that processes really get are written: the manifests, the dev and CI scripts,
# the tests' and benchmarks' code (this file is left out: it spells typos on purpose).
ENV_SOURCES = [
    *sorted((ROOT / "deploy" / "k8s").rglob("*.env")),
    *sorted((ROOT / "deploy" / "k8s").rglob("*.yaml")),
    *sorted((ROOT / "deploy" / "local").glob("*.sh")),
    ROOT / "deploy" / "Dockerfile",
    ROOT / "Makefile",
    ROOT / ".ci" / "run",
    ROOT / "tests" / "conftest.py",
    *sorted((ROOT / "tests" / "integration").glob("*.py")),
    *sorted((ROOT / "tests" / "support").glob("*.py")),
    *sorted((ROOT / "bench").glob("*.py")),
]
NAME = re.compile(r"\bINFERLOG_[A-Z0-9_]*[A-Z0-9]\b")


def _secret_fields(cls: type[CommonConfig]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("secret")]


@pytest.mark.parametrize("cls", config.config_classes(), ids=lambda c: c.__name__)
def test_repr_and_str_never_show_a_secret(cls: type[CommonConfig]) -> None:
    secrets = _secret_fields(CommonConfig)
    assert {"kafka_options", "s3_secret_key", "opensearch_password"} <= set(secrets)
    values = {name: f"sekret-{name}-4711" for name in _secret_fields(cls)}
    cfg = cls(**values)  # type: ignore[arg-type]
    for text in (repr(cfg), str(cfg), f"{cfg}", repr([cfg])):
        assert "sekret" not in text
        for name in values:
            assert f"{name}='***'" in text, f"{cls.__name__} repr should list {name}, redacted"
        assert all(f"{f.name}=" in text for f in dataclasses.fields(cls))  # every field is listed
    # Secret defaults (the dev stack's S3 key) are secrets too.
    default = cls()
    for f in dataclasses.fields(cls):
        if f.metadata.get("secret") and f.default:
            assert f"{f.name}={f.default!r}" not in repr(default)
            assert f"{f.name}='***'" in repr(default)
    # An unset secret reads as unset, so the repr still tells whether it was given.
    assert "opensearch_password=''" in repr(default)


def test_a_subclass_that_adds_a_secret_is_redacted_too() -> None:
    @dataclasses.dataclass(frozen=True)
    class Extra(CommonConfig):
        api_token: str = config.setting("", "a token", secret=True)

    assert repr(Extra(api_token="tok-123")).count("api_token='***'") == 1
    assert "tok-123" not in str(Extra(api_token="tok-123"))


def test_a_typo_is_an_error_naming_it_and_the_closest_setting() -> None:
    with pytest.raises(ConfigError) as err:
        config.load(CommonConfig, env={"INFERLOG_KAFKA_BOOTSTRAPS": "kafka:9092"})
    message = str(err.value)
    assert "INFERLOG_KAFKA_BOOTSTRAPS (did you mean INFERLOG_KAFKA_BOOTSTRAP?)" in message
    assert config.ALLOW_UNKNOWN_ENV in message
    # A setting of another stage is suggested too, even when loading only the common settings.
    with pytest.raises(ConfigError, match=r"INFERLOG_FLUSH_SPAN \(did you mean INFERLOG_FLUSH_SPAN_S\?\)"):
        config.load(CommonConfig, env={"INFERLOG_FLUSH_SPAN": "30"})
    with pytest.raises(ConfigError, match="INFERLOG_NOTHING_LIKE_IT_AT_ALL") as err2:
        config.load(CommonConfig, env={"INFERLOG_NOTHING_LIKE_IT_AT_ALL": "1"})
    assert "did you mean" not in str(err2.value)


def test_every_unknown_name_is_listed_and_other_variables_are_ignored() -> None:
    env = {"INFERLOG_PARTITONS": "3", "INFERLOG_S3_BUKET": "b", "PATH": "/bin", "KAFKA_BOOTSTRAPS": "x"}
    with pytest.raises(ConfigError) as err:
        config.load(CommonConfig, env=env)
    assert "INFERLOG_PARTITONS (did you mean INFERLOG_PARTITIONS?)" in str(err.value)
    assert "INFERLOG_S3_BUKET (did you mean INFERLOG_S3_BUCKET?)" in str(err.value)
    assert "KAFKA_BOOTSTRAPS" not in str(err.value).replace("INFERLOG_KAFKA", "")


def test_the_escape_hatch_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    env = {"INFERLOG_KAFKA_BOOTSTRAPS": "kafka:9092", config.ALLOW_UNKNOWN_ENV: "1"}
    with caplog.at_level(logging.WARNING, logger="core.config"):
        cfg = config.load(CommonConfig, env=env)
    assert cfg.kafka_bootstrap == CommonConfig.kafka_bootstrap
    assert "INFERLOG_KAFKA_BOOTSTRAPS" in caplog.text


def test_every_setting_of_every_class_is_accepted_whichever_class_is_loaded() -> None:
    classes = config.config_classes()
    names = {c.__name__ for c in classes}
    assert {"CommonConfig", "IngestConfig", "StreamsConfig", "SinkConfig"} <= names
    every = {config.env_name(f.name) for c in classes for f in dataclasses.fields(c)}
    config.check_env(dict.fromkeys(every, "x"))
    # The common settings load with the sinks' and the ingest's variables present (one ConfigMap for all).
    cfg = config.load(CommonConfig, env={"INFERLOG_FLUSH_SPAN_S": "30", "INFERLOG_SPOOL_DIR": "/s"})
    assert cfg.partitions == CommonConfig.partitions
    config.check_env(dict.fromkeys(config.NON_SETTING_ENV, "1"))


def _names_in(path: Path) -> set[str]:
    return set(NAME.findall(path.read_text())) if path.exists() else set()


def test_the_manifests_and_the_dev_and_test_variables_are_known_to_a_process_that_imports_only_core() -> None:
    """A fresh interpreter that imports nothing but core.config (as ``inferlog sink opensearch`` imports no
    streams code) knows every INFERLOG_* name of the manifests, scripts, tests and benchmarks."""
    used = set().union(*(_names_in(p) for p in ENV_SOURCES))
    assert {"INFERLOG_KAFKA_BOOTSTRAP", "INFERLOG_STORE_DIR", "INFERLOG_REQUIRE_INTEGRATION"} <= used
    code = (
        "import json, sys\n"
        "from core import config\n"
        "names = json.loads(sys.stdin.read())\n"
        "config.check_env(dict.fromkeys(names, 'x'))\n"
        "print(sorted(sys.modules.keys() & {'streams.config', 'sinks.config', 'ingest.config'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(sorted(used)), capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.replace("'", '"')) == ["ingest.config", "sinks.config", "streams.config"]


def _modules_defining_config_classes() -> dict[str, list[str]]:
    """Module -> classes deriving (directly or through each other) from CommonConfig, read from the source."""
    trees = {}
    for base in ("core", "schemas", "ingest", "streams", "sinks", "inferlog"):
        for path in (ROOT / base).rglob("*.py"):
            trees[".".join(path.relative_to(ROOT).with_suffix("").parts)] = ast.parse(path.read_text())
    for path in (ROOT / "deploy" / "local" / "inferlog_stack").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT / "deploy" / "local").with_suffix("").parts)
        trees[module] = ast.parse(path.read_text())
    known = {"CommonConfig"}
    found: dict[str, list[str]] = {}
    changed = True
    while changed:
        changed = False
        for module, tree in trees.items():
            for node in ast.walk(tree):
                if not isinstance(node, ast.ClassDef) or node.name in known:
                    continue
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if bases & known:
                    known.add(node.name)
                    found.setdefault(module, []).append(node.name)
                    changed = True
    return found


def test_every_module_that_defines_settings_is_imported_through_the_entry_points() -> None:
    """A fresh interpreter that loads only the ``inferlog.config`` entry points has imported every module that
    defines a settings class (else a process that does not import that module refuses its settings)."""
    found = _modules_defining_config_classes()
    assert {"ingest.config", "streams.config", "sinks.config", "inferlog_stack.manager"} <= set(found)
    code = "import json, sys\nfrom core import config\nconfig.config_classes()\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    missing = sorted(set(found) - set(json.loads(out.stdout)))
    assert not missing, (
        f"{missing} define settings classes ({[found[m] for m in missing]}) that the {config.ENTRY_POINT_GROUP} "
        "entry points do not reach: declare the module (or a function that imports it) in its pyproject's "
        f'[project.entry-points."{config.ENTRY_POINT_GROUP}"] and reinstall (pip install -e .)'
    )
