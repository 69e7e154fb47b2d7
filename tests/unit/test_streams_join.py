"""The pure join state machine over a dict (no Faust, no Kafka)."""

from __future__ import annotations

from streams.enrich import Side
from streams.join import Joiner, Orphan, Outcome, Paired, Tick
from tests.support.streams_harness import BASE_US, event, pair

S = 1_000_000


def joiner(store: dict[str, bytes] | None = None, tick_s: int = 60) -> Joiner:
    return Joiner(
        {} if store is None else store,
        pair_timeout_us=30 * S,
        done_retention_us=30 * S,
        tick_interval_us=tick_s * S,
    )


def side(ev: object, offset: int, partition: int = 0) -> Side:
    from streams.enrich import event_time_us

    return Side(ev, partition, offset, event_time_us(ev, 0))  # type: ignore[arg-type]


def kinds(outs: list[Outcome]) -> list[str]:
    return [type(o).__name__ for o in outs if not isinstance(o, Tick)]


def test_request_then_response_pairs_once() -> None:
    j = joiner()
    req, resp = pair("a", BASE_US)
    assert kinds(j.on_event(side(req, 0))) == []
    out = j.on_event(side(resp, 1))
    paired = [o for o in out if isinstance(o, Paired)]
    assert len(paired) == 1 and paired[0].request.event == req and paired[0].response.event == resp


def test_response_first_pairs() -> None:
    j = joiner()
    req, resp = pair("a", BASE_US)
    assert kinds(j.on_event(side(resp, 0))) == []
    assert kinds(j.on_event(side(req, 1))) == ["Paired"]


def test_duplicates_dropped_before_and_after_pairing() -> None:
    j = joiner()
    req, resp = pair("a", BASE_US)
    j.on_event(side(req, 0))
    assert kinds(j.on_event(side(req, 1))) == ["Duplicate"]
    assert kinds(j.on_event(side(resp, 2))) == ["Paired"]
    assert kinds(j.on_event(side(resp, 3))) == ["Duplicate"]
    assert kinds(j.on_event(side(req, 4))) == ["Duplicate"]


def test_reused_id_gets_its_own_pair() -> None:
    j = joiner()
    r1, s1 = pair("same", BASE_US)
    r2, s2 = pair("same", BASE_US + 5 * S)
    out = []
    for i, ev in enumerate([r1, r2, s1, s2]):
        out += j.on_event(side(ev, i))
    pairs = [o for o in out if isinstance(o, Paired)]
    assert [(p.request.event, p.response.event) for p in pairs] == [(r1, s1), (r2, s2)]


def test_retry_after_a_failed_attempt_pairs_the_response_with_the_last_attempt() -> None:
    # Knative redelivers with the same Ce-Id after a failure; KServe logged no response for the failed attempt.
    j = joiner()
    r1, _ = pair("retried", BASE_US)
    r2, s2 = pair("retried", BASE_US + 2 * S)
    out = []
    for i, ev in enumerate([r1, r2, s2]):
        out += j.on_event(side(ev, i))
    pairs = [o for o in out if isinstance(o, Paired)]
    assert [(p.request.event, p.response.event) for p in pairs] == [(r2, s2)]
    assert pairs[0].ordinal == 1  # the first record of the key
    late = event("other", "request", BASE_US + 31 * S)
    orphans = [o for o in j.on_event(side(late, 3)) if isinstance(o, Orphan)]
    assert [o.side.event for o in orphans] == [r1]  # the failed attempt is the one without a response
    assert orphans[0].ordinal == 2  # a record of its own in the sinks (schemas.wire.record_id)


def test_reused_id_records_get_ordinals_until_the_key_is_forgotten() -> None:
    store: dict[str, bytes] = {}
    j = joiner(store)
    keys: list[tuple[str, int]] = []

    def send(ce_id: str, start: int, offset: int) -> None:
        for k, ev in enumerate(pair(ce_id, start)):
            keys.extend((o.key, o.ordinal) for o in j.on_event(side(ev, offset + k)) if isinstance(o, Paired))

    send("same", BASE_US, 0)
    j = joiner(store)  # a restarted worker reads the count back from the store
    send("same", BASE_US + 5 * S, 2)
    send("other", BASE_US + 100 * S, 4)  # the watermark passes the done retention (30 s): "same" is forgotten
    send("same", BASE_US + 101 * S, 6)
    same = keys[0][0]
    assert keys == [(same, 1), (same, 2), (keys[2][0], 1), (same, 1)]


def test_missing_response_expires_by_event_time_with_deadline_as_detected_time() -> None:
    j = joiner()
    req = event("lonely", "request", BASE_US, b'{"instances": [1]}')
    j.on_event(side(req, 0))
    other = event("x", "request", BASE_US + 29 * S)
    assert kinds(j.on_event(side(other, 1))) == []  # watermark below the deadline
    later = event("y", "request", BASE_US + 31 * S)
    out = j.on_event(side(later, 2))
    orphans = [o for o in out if isinstance(o, Orphan)]
    assert [o.side.event.id for o in orphans] == ["lonely"]
    assert orphans[0].detected_us == BASE_US + 30 * S


def test_late_duplicate_after_expiry_is_dropped_and_other_side_is_orphan() -> None:
    j = joiner()
    req, resp = pair("a", BASE_US)
    j.on_event(side(req, 0))
    j.on_event(side(event("z", "request", BASE_US + 40 * S), 1))
    assert kinds(j.on_event(side(req, 2))) == ["Duplicate"]
    j.on_event(side(resp, 3))  # late response: pending alone now
    out = j.on_event(side(event("w", "request", BASE_US + 80 * S), 4))
    assert next(o.side.event.type for o in out if isinstance(o, Orphan)).endswith("response")


def test_idle_advance_expires_pending() -> None:
    j = joiner()
    req = event("lonely", "request", BASE_US)
    j.on_event(side(req, 0))
    assert kinds(j.on_advance(0, None, 10 * S)) == []  # W = t + 10 s: not yet due
    out = j.on_advance(0, BASE_US, 31 * S)
    assert [type(o).__name__ for o in out if not isinstance(o, Tick)] == ["Orphan"]
    assert j.on_advance(5, None, 100 * S) == []  # unknown partition: nothing to advance


def test_ticks_once_per_bucket_and_survive_restart() -> None:
    store: dict[str, bytes] = {}
    j = joiner(store, tick_s=10)
    ticks = []
    for i in range(30):
        ev = event(f"t{i}", "request", BASE_US + i * S)
        ticks += [o for o in j.on_event(side(ev, i)) if isinstance(o, Tick)]
    assert [t.watermark_us for t in ticks] == [BASE_US, BASE_US + 10 * S, BASE_US + 20 * S]
    # A fresh joiner over the same store (a restarted worker) continues the same tick sequence and
    # still knows the pending entries.
    j2 = joiner(store, tick_s=10)
    out = j2.on_event(side(event("t31", "request", BASE_US + 31 * S), 31))
    assert [t.watermark_us for t in out if isinstance(t, Tick)] == [BASE_US + 31 * S]
    orphans = [o for o in out if isinstance(o, Orphan)]
    assert [o.side.event.id for o in orphans] == ["t0", "t1"]


def test_same_input_same_outcomes_and_state() -> None:
    def run() -> tuple[list[Outcome], dict[str, bytes]]:
        store: dict[str, bytes] = {}
        j = joiner(store)
        out: list[Outcome] = []
        for i in range(200):
            req, resp = pair(f"id{i % 150}", BASE_US + i * 400_000)
            out += j.on_event(side(resp if i % 3 == 0 else req, 2 * i))
            if i % 7:
                out += j.on_event(side(req if i % 3 == 0 else resp, 2 * i + 1))
        return out, store

    a, sa = run()
    b, sb = run()
    assert a == b and sa == sb
    assert sum(isinstance(o, Paired) for o in a) > 100


class _CopyingStore(dict[str, bytes]):
    """Hands back a copy of each value: the joiner can never reuse a decoded entry and decodes every time."""

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        value = super().get(key)
        return default if value is None else bytes(bytearray(value))


def test_outcomes_do_not_depend_on_reusing_decoded_entries() -> None:
    """The joiner reuses the entry it last wrote when the store hands back the very bytes it wrote (the
    write-back overlay does until a barrier); a store that always returns copies must give equal outcomes."""
    evs = []
    for i in range(30):
        req, resp = pair(f"k{i % 7}", BASE_US + i * 700_000)  # ids reused 4-5 times each
        evs += [resp, req] if i % 3 == 0 else [req, resp]
        if i % 5 == 0:
            evs.append(req)  # a duplicate
    evs.append(event("lonely", "request", BASE_US))
    evs.append(event("late", "request", BASE_US + 200 * S))  # expires everything still pending
    cached, copying = joiner(), joiner(_CopyingStore())
    for i, ev in enumerate(evs):
        a = [o for o in cached.on_event(side(ev, i)) if not isinstance(o, Tick)]
        b = [o for o in copying.on_event(side(ev, i)) if not isinstance(o, Tick)]
        assert a == b, i
    assert cached._decoded  # the cache was used


def correcting(store: dict[str, bytes] | None = None) -> Joiner:
    return Joiner(
        {} if store is None else store,
        pair_timeout_us=30 * S,
        done_retention_us=120 * S,
        tick_interval_us=60 * S,
        late_window_us=60 * S,
    )


def test_a_late_response_corrects_the_request_only_record_instead_of_making_a_second() -> None:
    store: dict[str, bytes] = {}
    j = correcting(store)
    req, resp = pair("slow", BASE_US, latency_us=50 * S)
    j.on_event(side(req, 0))
    out = j.on_event(side(event("tick", "request", BASE_US + 40 * S), 1))
    orphans = [o for o in out if isinstance(o, Orphan)]
    assert [(o.side.event.id, o.ordinal) for o in orphans] == [("slow", 1)]
    j = correcting(store)  # the expired side survives a restart (it is in the store, body included)
    out = j.on_event(side(resp, 2))
    assert kinds(out) == ["Paired"]
    fixed = next(o for o in out if isinstance(o, Paired))
    assert (fixed.ordinal, fixed.revision, fixed.retracts) == (1, 2, "response_missing")
    assert fixed.request.event == req and fixed.request.event.data == req.data
    assert kinds(j.on_event(side(resp, 3))) == ["Duplicate"]
    assert kinds(j.on_event(side(req, 4))) == ["Duplicate"]
    later = j.on_event(side(event("w", "request", BASE_US + 200 * S), 5))
    assert [o.side.event.id for o in later if isinstance(o, Orphan)] == ["tick"]  # no request_missing for slow


def test_a_very_late_request_corrects_the_response_only_record() -> None:
    j = correcting()
    req, resp = pair("mirrored", BASE_US)
    j.on_event(side(resp, 0))
    j.on_event(side(event("tick", "request", BASE_US + 40 * S), 1))
    out = j.on_event(side(req, 2))  # sent with its own (early) Ce-Time, read late
    fixed = next(o for o in out if isinstance(o, Paired))
    assert (fixed.revision, fixed.retracts) == (2, "request_missing")


def test_after_the_late_window_a_late_response_makes_its_own_record() -> None:
    j = correcting()
    req, resp = pair("gone", BASE_US, latency_us=100 * S)
    j.on_event(side(req, 0))
    j.on_event(side(event("tick", "request", BASE_US + 95 * S), 1))  # W past deadline + late window (90 s)
    assert kinds(j.on_event(side(resp, 2))) == []  # pending alone, as without corrections
    out = j.on_event(side(event("w", "request", BASE_US + 200 * S), 3))
    lone = [o for o in out if isinstance(o, Orphan) and o.side.event.id == "gone"]
    assert len(lone) == 1 and lone[0].ordinal == 2 and lone[0].side.event.type.endswith("response")


def test_a_retried_request_pairs_the_pending_attempt_before_an_expired_one() -> None:
    j = correcting()
    first = event("retry", "request", BASE_US, b'{"attempt": 1}')
    j.on_event(side(first, 0))
    j.on_event(side(event("tick", "request", BASE_US + 40 * S), 1))  # the first attempt expires
    second, resp = pair("retry", BASE_US + 41 * S)
    j.on_event(side(second, 2))
    fixed = next(o for o in j.on_event(side(resp, 3)) if isinstance(o, Paired))
    assert (fixed.request.event.data, fixed.revision, fixed.ordinal) == (second.data, 1, 2)
