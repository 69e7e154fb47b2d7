"""Every KSERVE-LOGGER.md wire example parses into the Kafka record of the events contract; bad input is a
precise error naming the attribute."""

from __future__ import annotations

import pytest

from inferlog.events import from_kafka
from ingest import examples
from ingest.errors import BadEvent, UnsupportedFormat
from ingest.parse import parse
from ingest.service import to_record


def _content_type(headers: list[tuple[str, str]]) -> str | None:
    return next((v for k, v in headers if k.lower() == "content-type"), None)


@pytest.mark.parametrize("example", examples.ALL, ids=lambda e: e.name)
def test_example_parses_to_the_contract_record(example: examples.Example) -> None:
    events = parse(example.headers, example.body, _content_type(example.headers))
    assert len(events) == len(example.expected)
    for ev, want in zip(events, example.expected, strict=True):
        rec = to_record(ev)
        assert rec.key.decode() == want.key
        assert {k: v.decode() for k, v in rec.headers} == want.headers
        assert rec.value == want.value
        back = from_kafka(list(rec.headers), rec.value)  # what streams will read
        assert back.join_key == want.key and back.data == want.value


def test_legacy_quotes_are_stripped_only_from_extensions() -> None:
    headers = [
        ("ce-specversion", "0.2"),
        ("ce-id", '"quoted-id"'),
        ("ce-source", "s"),
        ("ce-type", "t"),
        ("ce-namespace", '"ns"'),
        ("ce-custom", '{"a":1}'),
    ]
    (ev,) = parse(headers, b"", None)
    assert ev.id == '"quoted-id"' and ev.namespace == "ns" and ev.extensions["custom"] == '{"a":1}'
    assert ev.specversion == "1.0"


def test_headers_match_case_insensitively() -> None:
    (ev,) = parse([("CE-ID", "x"), ("ce-Source", "s"), ("Ce-TYPE", "t"), ("cE-specVersion", "1.0")], b"", None)
    assert (ev.id, ev.source, ev.type) == ("x", "s", "t")


BASE = [("Ce-Specversion", "1.0"), ("Ce-Id", "i"), ("Ce-Source", "s"), ("Ce-Type", "t")]


@pytest.mark.parametrize(
    ("headers", "attribute"),
    [
        ([h for h in BASE if h[0] != "Ce-Id"], "id"),
        ([h for h in BASE if h[0] != "Ce-Source"], "source"),
        ([*[h for h in BASE if h[0] != "Ce-Type"], ("Ce-Type", "")], "type"),
        ([h for h in BASE if h[0] != "Ce-Specversion"], "specversion"),
        ([*[h for h in BASE if h[0] != "Ce-Specversion"], ("Ce-Specversion", "2.0")], "specversion"),
        ([*BASE, ("Ce-Time", "yesterday")], "time"),
        ([*BASE, ("Ce-Recordedtime", "2026-03-10 09:14")], "recordedtime"),
        ([*BASE, ("Ce-Metadata", '{"X-Request-Id":"not-a-list"}')], "metadata"),
        ([*BASE, ("Ce-Metadata", "[1]")], "metadata"),
        ([*BASE, ("Ce-Annotations", '{"team":1}')], "annotations"),
        ([*BASE, ("Ce-Dataref", "s3://x/y")], "dataref"),
        ([*BASE, ("Ce-Bad_name", "x")], "bad_name"),
        ([*BASE, ("Ce-Namespace", "a"), ("ce-namespace", "b")], "namespace"),
        ([*BASE, ("Ce-Namespace", "caf\udcc3")], "namespace"),
    ],
)
def test_bad_binary_event_names_the_attribute(headers: list[tuple[str, str]], attribute: str) -> None:
    with pytest.raises(BadEvent) as err:
        parse(headers, b"{}", "application/json")
    assert err.value.attribute == attribute


def test_structured_errors() -> None:
    with pytest.raises(BadEvent) as err:
        parse([], b"{not json", "application/cloudevents+json")
    assert err.value.attribute == "data"
    with pytest.raises(BadEvent) as err:
        parse(
            [],
            b'{"specversion":"1.0","id":"i","source":"s","type":"t","data_base64":"***"}',
            examples.STRUCTURED.headers[0][1],
        )
    assert err.value.attribute == "data_base64"
    with pytest.raises(BadEvent) as err:
        parse(
            [],
            b'[{"specversion":"1.0","id":"i","source":"s","type":"t"},{"id":"j"}]',
            "application/cloudevents-batch+json",
        )
    assert err.value.attribute == "specversion" and err.value.index == 1
    with pytest.raises(UnsupportedFormat):
        parse([], b"\x00", "application/cloudevents+avro")


def test_structured_extension_types_become_canonical_strings() -> None:
    (ev,) = parse(
        [], b'{"specversion":"1.0","id":"i","source":"s","type":"t","n":3,"flag":true}', "application/cloudevents+json"
    )
    assert ev.extensions == {"n": "3", "flag": "true"}


def test_structured_empty_attribute_name_is_named() -> None:
    """Found by the fuzz: an empty JSON key must still give a 400 that names something."""
    with pytest.raises(BadEvent) as err:
        parse([], b'{"specversion":"1.0","id":"i","source":"s","type":"t","":"x"}', "application/cloudevents+json")
    assert err.value.attribute == '""'
