"""The pair timeout of one inference: decided per event, first match wins.

1. the InferenceService annotation :data:`ANNOTATION` (``inferlog.io/pair-timeout: "10m"``), which reaches
   the events in ``Ce-Annotations`` when the ISVC lists it in ``spec.<component>.logger.metadataAnnotations``;
2. the key :data:`METADATA_KEY` of the model-metadata table (``inferlog metadata set ns/isvc pair_timeout=10m``);
3. a protocol default: a body that :func:`streams.enrich.sniff` detects as ``openai`` gets
   ``llm_pair_timeout_s`` (LLM generations routinely take minutes);
4. the global ``pair_timeout_s``.

Who decides: the side that arrives *first* (the one that waits in the join table) decides its own deadline,
from its own event: its ``Ce-Annotations`` (KServe sends the same annotations on the request and the response),
the metadata of its ``namespace/isvc``, and its own body's protocol (a response-first pair of an OpenAI call is
recognised by the response body: ``choices``, ``"object": "chat.completion"`` or an SSE stream). The deadline
is ``first side's event time + timeout`` and is stored with the pending side, so a restart keeps it and the
second side never changes it.

Determinism (DESIGN.md guarantee 3): steps 1, 3 and 4 are functions of the event and the configuration, hence
replay-identical. Step 2 reads the metadata table *as the worker knows it when the first side is processed*,
like ``model_metadata`` in the records: a replay gives identical records as long as the ``pair_timeout`` entry
of that model did not change in between (set it before the traffic it should govern, or use the annotation).

Durations are parsed strictly: ``<n>h``, ``<n>m``, ``<n>s`` (non-negative integers) in that order, each at most
once, at least one, no spaces, total in ``(0, 24h]``; e.g. ``10m``, ``90s``, ``1h30m``. Anything else (``10``,
``1.5h``, ``10 m``, ``0s``, ``25h``) is ignored: resolution falls through to the next step, the metric
``inferlog_streams_invalid_pair_timeouts_total{source}`` counts it, and a warning is logged once per model
and value. Resolution never raises into the join.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import Counter

from core.events import LoggedEvent
from streams.enrich import Side, parse_annotations, sniff

log = logging.getLogger("inferlog.streams")

ANNOTATION = "inferlog.io/pair-timeout"
METADATA_KEY = "pair_timeout"
MAX_TIMEOUT_US = 24 * 3600 * 1_000_000
SOURCES = ("annotation", "metadata", "protocol", "global")

INVALID = Counter(
    "inferlog_streams_invalid_pair_timeouts",
    "Pair-timeout values ignored because they are not a valid duration, by where they came from",
    ["source"],
)

_DURATION = re.compile(r"(?:([0-9]{1,6})h)?(?:([0-9]{1,8})m)?(?:([0-9]{1,10})s)?", re.ASCII)
_ASCII_SPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.lstrip() strips among ASCII characters
# A body that starts with one of these keys is v1/v2 for sniff() when it is JSON (sniff checks them before the
# OpenAI keys), and a body starting with "{" that is not JSON is never openai: no scan of a large tensor body.
_V1_V2_START = re.compile(rb'[ \t\n\r\x0b\x0c\x1c-\x1f]*\{[ \t\n\r]*"(?:instances|inputs|predictions|explanations)"')
_LOGGED_MAX = 1000


def parse_duration_us(text: str) -> int | None:
    """``10m`` / ``90s`` / ``1h30m`` to microseconds; ``None`` unless it is a valid duration in ``(0, 24h]``."""
    if not text:
        return None
    m = _DURATION.fullmatch(text)
    if m is None:
        return None
    h, mi, s = (int(g) if g is not None else 0 for g in m.groups())
    us = ((h * 60 + mi) * 60 + s) * 1_000_000
    if us <= 0 or us > MAX_TIMEOUT_US:
        return None
    return us


def is_openai(ev: LoggedEvent) -> bool:
    """Whether :func:`streams.enrich.sniff` detects ``openai`` for this body (with cheap pre-filters)."""
    data = ev.data
    if ev.dataref or not data:
        return False
    if _V1_V2_START.match(data) is not None:
        return False
    head = data.lstrip(_ASCII_SPACE)[:1]
    # an SSE start, or a non-ASCII first byte (sniff's str.lstrip() may strip Unicode spaces before "data:")
    maybe_sse = head in (b"d", b"e", b":") or head >= b"\x80"
    # any body sniff() calls openai has one of these (its object keys, or an escape that could spell one) or
    # starts like an SSE stream; a body with none of them is not sniffed (no JSON parse for most non-LLM traffic)
    if not maybe_sse and not (
        b"messages" in data or b"prompt" in data or b"choices" in data or b"object" in data or b"\\u" in data
    ):
        return False
    return sniff(ev).protocol == "openai"


@dataclass(frozen=True)
class Resolution:
    timeout_us: int
    source: str  # one of SOURCES


def resolve(
    ev: LoggedEvent,
    model_metadata: Mapping[str, str],
    *,
    default_us: int,
    llm_default_us: int,
    on_invalid: Callable[[str, str], None] | None = None,
) -> Resolution:
    """The pair timeout of the inference ``ev`` belongs to (``ev`` being its first-seen side). Pure."""
    if ev.annotations:
        value = parse_annotations(ev.annotations).get(ANNOTATION)
        if value is not None:
            us = parse_duration_us(value)
            if us is not None:
                return Resolution(us, "annotation")
            if on_invalid is not None:
                on_invalid("annotation", value)
    value = model_metadata.get(METADATA_KEY)
    if value is not None:
        us = parse_duration_us(value)
        if us is not None:
            return Resolution(us, "metadata")
        if on_invalid is not None:
            on_invalid("metadata", value)
    if llm_default_us != default_us and is_openai(ev):
        return Resolution(llm_default_us, "protocol")
    return Resolution(default_us, "global")


class PairTimeouts:
    """The resolver the app gives the :class:`streams.join.Joiner`: side -> pair timeout (µs)."""

    def __init__(
        self,
        *,
        default_us: int,
        llm_default_us: int,
        metadata: Callable[[str, str], Mapping[str, str]] | None = None,
    ) -> None:
        self.default_us = default_us
        self.llm_default_us = llm_default_us
        self.metadata = metadata
        self._logged: set[tuple[str, str, str]] = set()

    def _invalid(self, ev: LoggedEvent, source: str, value: str) -> None:
        INVALID.labels(source=source).inc()
        seen = (source, f"{ev.namespace}/{ev.isvc}", value)
        if seen not in self._logged:
            if len(self._logged) >= _LOGGED_MAX:
                self._logged.clear()
            self._logged.add(seen)
            log.warning(
                "ignoring an invalid pair timeout (expected e.g. 10m, 90s, 1h30m; at most 24h)",
                extra={"source": source, "model": seen[1], "value": value[:100]},
            )

    def resolution(self, side: Side) -> Resolution:
        ev = side.event
        try:
            meta = self.metadata(ev.namespace, ev.isvc) if self.metadata is not None else {}
            return resolve(
                ev,
                meta,
                default_us=self.default_us,
                llm_default_us=self.llm_default_us,
                on_invalid=functools.partial(self._invalid, ev),
            )
        except Exception:  # never into the join: the global timeout, still a function of the configuration
            log.exception("pair-timeout resolution failed; using the global timeout")
            return Resolution(self.default_us, "global")

    def __call__(self, side: Side) -> int:
        ev = side.event
        if not ev.annotations and self.llm_default_us == self.default_us and self.metadata is None:
            return self.default_us
        return self.resolution(side).timeout_us
