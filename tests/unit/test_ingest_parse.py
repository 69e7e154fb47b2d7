"""Every KSERVE-LOGGER.md wire example parses into the Kafka record of the events contract; bad input is a
precise error naming the attribute."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.events import LoggedEvent, from_kafka, to_kafka
from ingest.errors import BadEvent, UnsupportedFormat
from ingest.parse import parse
from ingest.service import to_record
from tests.support import ingest_examples as examples


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


_opt_text = st.none() | st.text(max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=6),
    _opt_text,
    _opt_text,
    _opt_text,
    _opt_text,
    _opt_text,
    st.none() | st.integers(0, 10**9),
    _opt_text,
    st.dictionaries(
        st.sampled_from(["x", "custom", "id", "time", "datasize", "namespace", "inferenceservicename"]),
        st.text(max_size=4),
        max_size=4,
    ),
)
def test_to_kafka_headers_are_the_attributes_in_order(
    id_: str,
    time: str | None,
    content_type: str | None,
    metadata: str | None,
    annotations: str | None,
    dataref: str | None,
    datasize: int | None,
    sha: str | None,
    extensions: dict[str, str],
) -> None:
    """to_kafka builds its headers without attributes()'s dicts: the same names, values and order, also when a
    hand-built event has an extension named like a field."""
    ev = LoggedEvent(
        id=id_,
        source="s",
        type="t",
        time=time,
        datacontenttype=content_type,
        namespace="ns",
        isvc="m",
        metadata=metadata,
        annotations=annotations,
        recordedtime=time,
        dataref=dataref,
        datasize=datasize,
        datasha256=sha,
        extensions=extensions,
        data=b"{}",
    )
    key, headers, value = to_kafka(ev)
    want = [(f"ce_{k}", v.encode()) for k, v in ev.attributes().items()]
    if content_type is not None:
        want.append(("content-type", content_type.encode()))
    assert (key, headers, value) == (ev.join_key.encode(), want, b"{}")


def test_remembered_maps_and_media_types_give_the_same_answers() -> None:
    """Valid Ce-Metadata/Ce-Annotations texts and Content-Types are memoised; an invalid text is still refused
    every time, also after valid ones were remembered."""
    base = [("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "s"), ("ce-type", "t")]
    good = [*base, ("ce-metadata", '{"X-Request-Id":["r-1"]}'), ("ce-annotations", '{"team":"a"}')]
    for _ in range(2):
        (ev,) = parse(good, b"{}", "application/json; charset=utf-8")
        assert ev.metadata == '{"X-Request-Id":["r-1"]}' and ev.datacontenttype == "application/json; charset=utf-8"
    for bad, attribute in (
        ('{"X-Request-Id":"r-1"}', "metadata"),  # a string where a list of strings belongs
        ('{"team":["a"]}', "annotations"),  # a list where a string belongs
    ):
        for _ in range(2):
            with pytest.raises(BadEvent) as err:
                parse([*base, (f"ce-{attribute}", bad)], b"{}", None)
            assert err.value.attribute == attribute
    with pytest.raises(UnsupportedFormat):  # the memoised media type still routes structured formats
        parse(base, b"{}", "application/cloudevents+xml")
    with pytest.raises(UnsupportedFormat):
        parse(base, b"{}", "application/cloudevents+xml")
