"""BACKWARD evolution of the Avro schemas: a value written with any earlier committed version of a schema decodes
with today's (new fields take their defaults), as the registry's BACKWARD rule requires."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import fastavro
import pytest

from schemas import load_schema

ROOT = Path(__file__).resolve().parents[2]


def _history(name: str) -> list[tuple[str, dict[str, Any]]]:
    path = f"schemas/{name}.avsc"
    log = subprocess.run(["git", "log", "--format=%h", "--", path], cwd=ROOT, capture_output=True, text=True)
    out = []
    for commit in log.stdout.split():
        shown = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode == 0:
            out.append((commit, json.loads(shown.stdout)))
    return out


def _value(schema: Any) -> Any:
    """A value of ``schema`` (a parsed Avro type) with every field set: the first branch of a union that is
    not null, so that fields an old writer knew are really written."""
    if isinstance(schema, list):
        branch = next((b for b in schema if b != "null"), "null")
        return _value(branch)
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            return {f["name"]: _value(f["type"]) for f in schema["fields"]}
        if kind == "map":
            return {"k": _value(schema["values"])}
        if kind == "array":
            return [_value(schema["items"])]
        if kind == "enum":
            return schema["symbols"][0]
        return _value(kind)
    return {"string": "s", "bytes": b"b", "int": 3, "long": 4, "double": 1.5, "float": 1.5, "boolean": True}.get(schema)


@pytest.mark.parametrize("name", ["inference_record", "failure_signal"])
def test_every_committed_version_is_read_by_todays_schema(name: str) -> None:
    history = _history(name)
    if len(history) < 2:
        pytest.skip("no git history of the schema here")
    new = fastavro.parse_schema(json.loads(load_schema(name)))
    new_fields = {f["name"]: f for f in json.loads(load_schema(name))["fields"]}
    for commit, old in history:
        parsed = fastavro.parse_schema(old)
        value = _value(old)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, value)
        buf.seek(0)
        decoded = fastavro.schemaless_reader(buf, parsed, new)
        assert isinstance(decoded, dict), commit
        old_names = {f["name"] for f in old["fields"]}
        for field, spec in new_fields.items():
            if field not in old_names:
                assert decoded[field] == spec["default"], (commit, field)
        assert decoded["join_key"] == "s", commit


def test_the_revision_fields_default_to_a_first_revision() -> None:
    record = {f["name"]: f for f in json.loads(load_schema("inference_record"))["fields"]}
    failure = {f["name"]: f for f in json.loads(load_schema("failure_signal"))["fields"]}
    assert (record["ordinal"]["default"], record["revision"]["default"]) == (1, 1)
    assert (failure["ordinal"]["default"], failure["retracts"]["default"]) == (1, None)
