"""The consume loop's in-line path (:meth:`SinkRunner._handle_all`) makes the same batches, commits, dead letters
and converted parts as handling each message with :meth:`SinkRunner._handle`, whatever the ``consume()`` results
the messages come in."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from sinks.framework import SinkRunner
from tests.unit.test_sinks_framework import TOPIC, ConvertingSink, Msg, rec, runner, tick


def stream(seed: int, n: int = 400) -> list[Msg]:
    """Records of two partitions with record times that sometimes jump past the span, ticks, undecodable
    values, records without an event time, records with headers, and bodies of varied size (cuts by bytes)."""
    rnd = random.Random(seed)
    out: list[Msg] = []
    offsets, times = [0, 0], [0.0, 0.0]
    for _ in range(n):
        p = rnd.randrange(2)
        o = offsets[p]
        offsets[p] += 1
        times[p] += rnd.choice([0.0, 0.1, 0.5, 1.0, 4.0, 11.0])
        roll = rnd.random()
        if roll < 0.08:
            out.append(tick(o, times[p] + rnd.choice([0.0, 12.0]), partition=p))
        elif roll < 0.12:
            out.append(Msg(TOPIC, p, o, b"bad", b"not json"))
        elif roll < 0.14:
            value = {"join_key": f"k{o}", "namespace": "ns", "isvc": "m"}  # no event time: dead
            out.append(Msg(TOPIC, p, o, b"k", json.dumps(value).encode()))
        else:
            m = rec(o, times[p], partition=p)
            doc = json.loads(m._value or b"")
            doc["pad"] = "x" * rnd.choice([0, 10, 300])
            doc["isvc"] = rnd.choice(["m", "n"])
            headers = [("traceparent", b"00-abc")] if rnd.random() < 0.1 else None
            out.append(Msg(TOPIC, p, o, m._key, json.dumps(doc).encode(), headers))
    return out


def chunks(msgs: list[Msg], rnd: random.Random) -> list[list[Msg]]:
    out, i = [], 0
    while i < len(msgs):
        k = rnd.choice([1, 2, 7, 50, 1000])
        out.append(msgs[i : i + k])
        i += k
    return out


def state(r: SinkRunner) -> dict[str, Any]:
    sink = r.sink
    assert isinstance(sink, ConvertingSink)
    opened = {
        tp: None
        if p.open is None
        else (
            [i.offset for i in p.open.items],
            [i.record for i in p.open.items],
            p.open.chunks,
            p.open.converted,
            p.open.end_offset,
            p.open.nbytes,
            p.open.first_time_us,
            p.open.max_time_us,
        )
        for tp, p in r._parts.items()
    }
    consumer, producer = r._consumer, r._producer
    return {
        "batches": sink.batches,
        "written": sink.written,
        "commits": consumer.commits,  # type: ignore[union-attr]
        "dead": [(m["key"], m["headers"]["error.offset"]) for m in producer.sent],  # type: ignore[union-attr]
        "open": opened,
        "commit_due": {tp: p.commit_due for tp, p in r._parts.items()},
        "stats": (r.stats.records_in, r.stats.written, r.stats.dead_lettered, r.stats.batches),
    }


def run(msgs: list[Msg], flush: dict[str, int], split: int, *, in_line: bool) -> dict[str, Any]:
    r, _, _ = runner(ConvertingSink(), **flush)
    r.max_in_flight = 0  # writes in this thread: the results are in order
    for chunk in chunks(msgs, random.Random(split)):
        if in_line:
            r._handle_all(chunk)  # type: ignore[arg-type]
        else:
            for m, headers, decoded in r._predecode(chunk):  # type: ignore[arg-type]
                r._handle(m, headers, decoded)
        r._commit_due_offsets()  # as each turn of the consume loop does
    return state(r)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("flush", [{"flush_records": 5}, {"flush_records": 50, "flush_bytes": 2000}])
def test_the_in_line_path_cuts_and_converts_as_the_general_one(seed: int, flush: dict[str, int]) -> None:
    msgs = stream(seed)
    general = run(msgs, flush, seed, in_line=False)
    assert general["batches"], "the stream cut no batch"
    assert run(msgs, flush, seed, in_line=True) == general
    # other consume() results: the same batches (a tick's own commit may come at another turn of the loop)
    other = run(msgs, flush, seed + 100, in_line=True)
    assert {k: v for k, v in other.items() if k not in ("commits", "commit_due")} == {
        k: v for k, v in general.items() if k not in ("commits", "commit_due")
    }
    assert dict(other["commits"]) == dict(general["commits"])  # the last commit of each partition


def test_a_paused_partition_is_rewound_not_batched_in_line() -> None:
    """A partition whose write failed is paused: its records that were already fetched go back to Kafka (one
    seek), on the in-line path too."""
    from sinks.errors import WriteError

    sink = ConvertingSink()
    r, c, _ = runner(sink, flush_records=3)
    r.max_in_flight = 0
    sink.fail.append(WriteError("503", retriable=True))
    first: list[Any] = [rec(i) for i in range(3)]
    r._handle_all(first)
    assert r.partition((TOPIC, 0)).pending is not None and c.paused == {0}
    fetched: list[Any] = [rec(i) for i in range(3, 6)]
    r._handle_all(fetched)
    assert c.seeks == [(0, 3)] and r.partition((TOPIC, 0)).open is None
    assert r.stats.records_in == 3
