"""The join state machine: pure, over a ``MutableMapping[str, bytes]`` (the Faust table, or a dict in tests).

State per join key (``namespace/isvc/component/ce-id``) is one entry: the *pending* sides still waiting for a
partner, and the fingerprints of sides already emitted (*done*) with the event time at which they are
forgotten. A fingerprint is ``(source, id, type, Ce-Time, body digest)``: deduplication is on
``(source, id, type)`` refined by the occurrence time and the body, so a redelivered event is dropped while a
caller that *reuses* an id for a new inference still gets its own pair.

Rules (all decisions are functions of the input events in partition order, never of the wall clock):

- **Pairing.** A side whose fingerprint is pending or done is a duplicate and is dropped. Otherwise it pairs
  with a pending side of the other type: a response takes the *latest* pending request with time <= its own
  (else the oldest request); a request takes the oldest pending response with time >= its own (else the
  oldest). The pair is emitted once; both fingerprints become *done*. Without a partner the side is stored.
  Why the latest request: an id is reused above all by retries (Knative redelivers a CloudEvent with the same
  ``Ce-Id`` after a failure; clients and meshes retry with the same id), and KServe logs no response for the
  failed attempt, so the response belongs to the last attempt before it; the earlier attempt expires as
  ``request_only``, which is what happened to it.
- **Record ordinal.** Each record emitted for a key (pair or orphan) gets an ordinal, counted in the entry
  while the key is remembered (until its last done fingerprint is forgotten): the first record of a key is
  ordinal 1; a reused id's later records are 2, 3, ... and carry it in a header
  (:data:`schemas.wire.ORDINAL_HEADER`), so that the sinks (OpenSearch ``_id``) keep every inference
  instead of the last one.
- **Watermark.** Each source partition has an event-time watermark ``W`` = the maximum event time seen on it
  (``Ce-Time``, else the Kafka timestamp). It only grows.
- **Pair timeout.** Decided per side when it is stored pending (``timeout_for(side)``, by default the global
  ``pair_timeout``; the app resolves annotation > model metadata > protocol default > global, see
  :mod:`streams.timeouts`), so it is the *first* side that decides; its deadline ``time + pair_timeout`` is
  stored with it (``"d"``) and never recomputed.
- **Expiry.** A pending side expires when ``W >= time + pair_timeout``: it is emitted alone
  (``request_only`` / ``response_only``) with ``detected_time = time + pair_timeout`` (its deadline, hence
  independent of *when* it was noticed) and becomes *done*. Expiries are emitted in (deadline, key) order right
  after the event that moved ``W`` past them. Done fingerprints are forgotten when
  ``W >= their time + done_retention``. An expired side is also kept, body included, as *expired* until
  ``W >= deadline + late_window``.
- **Correction.** A new side without a pending partner pairs with an *expired* side of the other type (chosen as
  a pending partner would be): it is emitted as a pair with the expired side's ordinal and ``revision`` 2, so
  that the record supersedes the one-sided record (same identity in the sinks) and its failure signal is
  retracted, instead of a second one-sided record. After ``late_window`` the body is gone and a late side makes
  its own record as before.
- **Idle fallback.** When a partition gets no events for ``idle_timeout`` of wall-clock time and has no backlog
  (every event of it processed and committed, :mod:`streams.idle`), the app sends an expiry marker into that
  partition of the marker topic; :meth:`Joiner.on_advance` moves ``W`` forward by the idle wall-clock time.
  This is the only wall-clock influence; since ``detected_time`` is the deadline, the records it produces are
  the same bytes as a replay that expires them by event time.
- **Ticks.** Whenever ``W`` enters a new bucket ``floor(W / tick_interval)``, a :class:`Tick` carrying ``W`` is
  emitted after the event's other outputs, and ``(W, bucket)`` is persisted under the key ``\\x00wm/<p>`` so
  that a restarted worker continues the same tick sequence.

Entries are stored as ``>HI`` (partition, header length) + a JSON header + the concatenated bodies.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from core.events import fingerprint as event_fingerprint
from core.events import from_attributes
from streams.enrich import Side
from streams.errors import StateError

_HEAD = struct.Struct(">HI")
WM_PREFIX = "\x00wm/"
_DECODED_MAX = 20_000  # decoded entries kept (pending ones hold their bodies)


def fingerprint(side: Side) -> str:
    return event_fingerprint(side.event, side.time_us)


@dataclass
class _Pending:
    side: Side
    fp: str
    deadline: int


@dataclass
class _Expired:
    """A side emitted alone, kept until ``until`` so that a late partner can still correct its record."""

    side: Side
    fp: str
    ordinal: int
    until: int


_W = TypeVar("_W", _Pending, _Expired)


@dataclass
class Entry:
    partition: int
    pending: list[_Pending] = field(default_factory=list)
    done: dict[str, int] = field(default_factory=dict)  # fingerprint -> forget at (event time, µs)
    emitted: int = 0  # records emitted for this key while it is remembered (the last one's ordinal)
    expired: list[_Expired] = field(default_factory=list)

    def ordinal(self) -> int:
        """The ordinal of the record about to be emitted for this key (counts it)."""
        self.emitted += 1
        return self.emitted

    def next_due(self) -> int | None:
        dues = [p.deadline for p in self.pending] + list(self.done.values()) + [x.until for x in self.expired]
        return min(dues) if dues else None

    def encode(self) -> bytes:
        bodies: list[bytes] = []

        def put(side: Side, **extra: object) -> dict[str, object]:
            ev = side.event
            bodies.append(ev.data)
            attrs = {"a": ev.attributes(), "ct": ev.datacontenttype, "p": side.partition, "o": side.offset}
            return {**attrs, "t": side.time_us, "n": len(ev.data), **extra}

        head_obj: dict[str, object] = {
            "s": [put(p.side, f=p.fp, d=p.deadline) for p in self.pending],
            "d": self.done,
        }
        if self.emitted:
            head_obj["e"] = self.emitted
        if self.expired:
            head_obj["x"] = [put(x.side, f=x.fp, r=x.ordinal, u=x.until) for x in self.expired]
        head = orjson.dumps(head_obj)
        return _HEAD.pack(self.partition, len(head)) + head + b"".join(bodies)

    @classmethod
    def decode(cls, raw: bytes) -> Entry:
        try:
            partition, n = _HEAD.unpack_from(raw)
            head = orjson.loads(raw[_HEAD.size : _HEAD.size + n])
            pos = _HEAD.size + n

            def side(s: dict[str, Any]) -> Side:
                nonlocal pos
                data = raw[pos : pos + s["n"]]
                pos += s["n"]
                return Side(from_attributes(s["a"], data, s["ct"]), s["p"], s["o"], s["t"])

            pending = [_Pending(side(s), s["f"], s["d"]) for s in head["s"]]
            expired = [_Expired(side(x), x["f"], x["r"], x["u"]) for x in head.get("x", ())]
            done = {str(k): int(v) for k, v in head["d"].items()}
            return cls(partition, pending, done, int(head.get("e", 0)), expired)
        except Exception as exc:
            raise StateError(f"undecodable join-state entry: {exc}") from exc


def entry_partition(raw: bytes) -> int:
    return int(_HEAD.unpack_from(raw)[0])


@dataclass(frozen=True)
class Paired:
    key: str
    request: Side
    response: Side
    ordinal: int = 1  # the n-th record of this key (> 1: a reused id)
    #: set when this pair corrects the one-sided record of ``ordinal`` (its partner came late): the failure kind
    #: that record signalled, which the correction retracts
    retracts: str | None = None

    @property
    def revision(self) -> int:
        """1 for a record's first version; 2 for the pair that supersedes a one-sided record."""
        return 1 if self.retracts is None else 2

    @property
    def detected_us(self) -> int:
        return max(self.request.time_us, self.response.time_us)


@dataclass(frozen=True)
class Orphan:
    """A side whose partner did not come within the pair timeout."""

    key: str
    side: Side
    detected_us: int  # its deadline
    ordinal: int = 1  # the n-th record of this key (> 1: a reused id)


@dataclass(frozen=True)
class Duplicate:
    key: str
    side: Side


@dataclass(frozen=True)
class Tick:
    partition: int
    watermark_us: int


Outcome = Paired | Orphan | Duplicate | Tick


@dataclass
class _Part:
    watermark: int | None = None
    bucket: int | None = None
    heap: list[tuple[int, str]] = field(default_factory=list)


class Joiner:
    """Join state machine. ``store`` holds entries (key = join key) and per-partition watermarks.

    In-memory state (watermarks, expiry heaps) is a cache of the store: :meth:`forget` drops it (after a
    rebalance) and it is rebuilt from the store on the next event of any partition.
    """

    def __init__(
        self,
        store: MutableMapping[str, bytes],
        *,
        pair_timeout_us: int,
        done_retention_us: int,
        tick_interval_us: int,
        timeout_for: Callable[[Side], int] | None = None,
        late_window_us: int = 0,
    ) -> None:
        self.store = store
        self.pair_timeout_us = pair_timeout_us
        # How long after its deadline an expired side can still be corrected by a late partner; at most
        # done_retention (its fingerprint must still be remembered to drop duplicates of it).
        self.late_window_us = min(late_window_us, done_retention_us)
        self.timeout_for = timeout_for  # side -> its pair timeout (µs); None: pair_timeout_us for every side
        self.done_retention_us = done_retention_us
        self.tick_interval_us = tick_interval_us
        self.parts: dict[int, _Part] = {}
        self._loaded = False
        # The Entry last written per key, with the exact bytes object written: when the store hands back that
        # same object (the write-back overlay does until its barrier), the entry is taken from here instead of
        # being decoded again (~17 µs, most pairs complete within one barrier interval). Taken on read, put
        # back on write, so an entry mutated by a failed event is never reused; bounded.
        self._decoded: dict[str, tuple[bytes, Entry]] = {}

    # -- state cache --------------------------------------------------------------------------------------
    def forget(self) -> None:
        self.parts.clear()
        self._decoded.clear()
        self._loaded = False

    def _load(self) -> None:
        """Rebuild watermarks and expiry heaps of every partition found in the store (one scan)."""
        self.parts.clear()
        for key, raw in list(self.store.items()):
            if key.startswith(WM_PREFIX):
                part = self.parts.setdefault(int(key[len(WM_PREFIX) :]), _Part())
                wm = orjson.loads(raw)
                part.watermark, part.bucket = int(wm["w"]), int(wm["b"])
                continue
            entry = Entry.decode(raw)
            due = entry.next_due()
            if due is not None:
                self.parts.setdefault(entry.partition, _Part()).heap.append((due, key))
        for part in self.parts.values():
            heapq.heapify(part.heap)
        self._loaded = True

    def _part(self, partition: int) -> _Part:
        if not self._loaded:
            self._load()
        return self.parts.setdefault(partition, _Part())

    def watermark(self, partition: int) -> int | None:
        part = self.parts.get(partition)
        return part.watermark if part else None

    def pending_count(self, partition: int) -> int:
        part = self.parts.get(partition)
        return len(part.heap) if part else 0

    # -- reads and writes -----------------------------------------------------------------------------------
    def _entry(self, key: str, raw: bytes) -> Entry:
        cached = self._decoded.pop(key, None)
        if cached is not None and cached[0] is raw:
            return cached[1]
        return Entry.decode(raw)

    def _write(self, key: str, entry: Entry, part: _Part) -> None:
        due = entry.next_due()
        if due is None:
            if key in self.store:
                del self.store[key]
            return
        raw = entry.encode()
        self.store[key] = raw
        if len(self._decoded) >= _DECODED_MAX:
            self._decoded.clear()
        self._decoded[key] = (raw, entry)
        heapq.heappush(part.heap, (due, key))

    # -- inputs -------------------------------------------------------------------------------------------
    def on_event(self, side: Side) -> list[Outcome]:
        """Process one request or response event read from ``side.partition``."""
        part = self._part(side.partition)
        key = side.event.join_key
        raw = self.store.get(key)
        entry = self._entry(key, raw) if raw is not None else Entry(side.partition)
        fp = fingerprint(side)
        out: list[Outcome] = []
        if fp in entry.done or any(p.fp == fp for p in entry.pending):
            out.append(Duplicate(key, side))
        else:
            partner = self._partner(entry.pending, side)
            late = self._partner(entry.expired, side) if partner is None else None
            if late is not None:
                entry.expired.remove(late)
                req, resp = (side, late.side) if side.is_request else (late.side, side)
                kind = "request_missing" if side.is_request else "response_missing"
                pair = Paired(key, req, resp, late.ordinal, retracts=kind)
                forget_at = pair.detected_us + self.done_retention_us
                entry.done[fp] = forget_at
                entry.done[late.fp] = max(entry.done.get(late.fp, 0), forget_at)
                out.append(pair)
            elif partner is None:
                timeout = self.timeout_for(side) if self.timeout_for is not None else self.pair_timeout_us
                entry.pending.append(_Pending(side, fp, side.time_us + timeout))
            else:
                entry.pending.remove(partner)
                req, resp = (side, partner.side) if side.is_request else (partner.side, side)
                pair = Paired(key, req, resp, entry.ordinal())
                forget_at = pair.detected_us + self.done_retention_us
                entry.done[fp] = forget_at
                entry.done[partner.fp] = forget_at
                out.append(pair)
            self._write(key, entry, part)
        out.extend(self._advance(side.partition, part, side.time_us))
        return out

    def on_advance(self, partition: int, base_us: int | None, elapsed_us: int) -> list[Outcome]:
        """Idle fallback (an expiry marker): move ``W`` to ``(base or W) + elapsed``."""
        part = self._part(partition)
        base = base_us if base_us is not None else part.watermark
        if base is None:
            return []
        return self._advance(partition, part, base + elapsed_us)

    @staticmethod
    def _partner(waiting: list[_W], side: Side) -> _W | None:
        others = [p for p in waiting if p.side.is_request != side.is_request]
        if not others:
            return None

        def order(p: _W) -> tuple[int, int]:
            return (p.side.time_us, p.side.offset)

        if side.is_request:
            fitting = [p for p in others if p.side.time_us >= side.time_us]
            return min(fitting or others, key=order)
        fitting = [p for p in others if p.side.time_us <= side.time_us]
        return max(fitting, key=order) if fitting else min(others, key=order)

    def _advance(self, partition: int, part: _Part, to_us: int) -> list[Outcome]:
        if part.watermark is not None and to_us <= part.watermark:
            return []
        part.watermark = to_us
        orphans: list[Orphan] = []
        while part.heap and part.heap[0][0] <= to_us:
            _, key = heapq.heappop(part.heap)
            raw = self.store.get(key)
            if raw is None:
                continue
            entry = self._entry(key, raw)
            changed = False
            expired = sorted((p for p in entry.pending if p.deadline <= to_us), key=lambda p: (p.deadline, p.fp))
            for p in expired:
                entry.pending.remove(p)
                entry.done[p.fp] = p.deadline + self.done_retention_us
                orphan = Orphan(key, p.side, p.deadline, entry.ordinal())
                orphans.append(orphan)
                if self.late_window_us > 0:
                    entry.expired.append(_Expired(p.side, p.fp, orphan.ordinal, p.deadline + self.late_window_us))
                changed = True
            kept = [x for x in entry.expired if x.until > to_us]
            if len(kept) != len(entry.expired):
                entry.expired = kept
                changed = True
            for fp, forget_at in list(entry.done.items()):
                if forget_at <= to_us:
                    del entry.done[fp]
                    changed = True
            if changed:
                self._write(key, entry, part)
        # Sorted so that the order does not depend on stale heap items (which differ after a restart).
        orphans.sort(key=lambda o: (o.detected_us, o.key, o.side.offset))
        out: list[Outcome] = list(orphans)
        bucket = to_us // self.tick_interval_us
        if part.bucket is None or bucket > part.bucket:
            part.bucket = bucket
            self.store[f"{WM_PREFIX}{partition}"] = orjson.dumps({"w": to_us, "b": bucket})
            out.append(Tick(partition, to_us))
        return out

    def pending_keys(self) -> Iterator[str]:
        for key in self.store:
            if not key.startswith(WM_PREFIX):
                yield key
