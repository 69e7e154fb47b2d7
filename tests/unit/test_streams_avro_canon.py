"""The schema-aware canonicalisation in schemas.serde gives the same bytes as sorting every dict."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import fastavro

from schemas.serde import AvroSerde, RegistryClient, _canonical, load_schema
from streams.enrich import Side, build
from tests.support.streams_harness import BASE_US, event

FIELDS = ["traceparent", "x-request-id", "b", "a", "Z", "zz", "m", "x-b3-traceid"]


def shuffled_json(rng: random.Random, lists: bool) -> str:
    keys = rng.sample(FIELDS, rng.randint(0, len(FIELDS)))
    return json.dumps({k: [f"v{rng.random()}"] if lists else f"v{rng.random()}" for k in keys})


def records(n: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        kw = {"metadata": shuffled_json(rng, True), "annotations": shuffled_json(rng, False)}
        req = event(f"c{i}", "request", BASE_US + i, b'{"instances": [[1, 2]]}', **kw)
        resp = event(f"c{i}", "response", BASE_US + i + 5, b'{"error": "x"}', **kw)
        meta = {k: f"m{rng.random()}" for k in rng.sample(FIELDS, 3)}
        sides = [Side(req, 0, i, BASE_US + i), Side(resp, 0, i + 1, BASE_US + i + 5)]
        if i % 3 == 1:
            sides[1] = None  # type: ignore[call-overload]
        b = build(sides[0], sides[1], detected_us=BASE_US + i, model_metadata=meta)
        out.append({"r": b.record, "f": b.failures})
    return out


def test_only_maps_sorted_gives_identical_bytes() -> None:
    rec = AvroSerde(RegistryClient("http://unused"), "s-value", load_schema("inference_record"))
    fail = AvroSerde(RegistryClient("http://unused"), "f-value", load_schema("failure_signal"))
    rec.schema_id = fail.schema_id = 1

    def slow(serde: AvroSerde, value: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, serde.schema, _canonical(value))
        return bytes([0, 0, 0, 0, 1]) + buf.getvalue()

    n_maps = 0
    for item in records(60):
        assert rec.encode(item["r"]) == slow(rec, item["r"])
        n_maps += bool(item["r"]["metadata"])
        for f in item["f"]:
            assert fail.encode(f) == slow(fail, f)
    assert n_maps > 30  # the maps were really exercised
