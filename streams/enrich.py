"""Enrichment: pure functions from logged events to ``InferenceRecord`` and ``FailureSignal`` dicts.

Everything here is a function of its arguments only (no clock, no I/O), which is what makes the streams
output deterministic (DESIGN.md guarantee 3). Times are epoch microseconds.

Protocol detection sniffs the bodies, never the Content-Type (KServe copies the request's on both events):

- ``v1``: request ``{"instances": [...]}`` (or a non-tensor ``"inputs"``), response ``{"predictions": ...}``
  or ``{"explanations": ...}``;
- ``v2`` (Open Inference Protocol): request ``"inputs"`` as a list of tensors (``name``/``datatype``/``shape``),
  response ``"outputs"`` and/or ``"model_name"``; a body that is a JSON header followed by raw tensor bytes
  (the binary-tensor extension) counts as v2;
- ``openai``: request with ``"messages"`` or ``"prompt"``, response with ``"choices"`` or an ``"object"``
  like ``chat.completion``, or a whole concatenated SSE stream (``data: {...}`` lines ending ``data: [DONE]``);
- ``unknown`` otherwise (empty bodies, claim-checked bodies, gRPC frames, ...).

For ``openai`` bodies the sniff also hands the parsed body to :mod:`streams.llm` (prompt, completion,
finish reason, choices, token usage: the ``llm_*`` fields); no other protocol pays anything for it.

A body is *unparseable* when it is non-empty, not claim-checked, not declared binary (gRPC, octet-stream,
protobuf) and is neither JSON, nor a JSON header followed by bytes, nor an SSE stream of JSON chunks. A
response body is an *error object* when it is a JSON object with an ``"error"`` member and no result member
(``predictions``, ``outputs``, ``choices``), or an SSE stream with such a chunk.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from core.events import REQUEST_TYPE, RESPONSE_TYPE, LoggedEvent
from streams import llm

PROTOCOLS = ("v1", "v2", "openai", "unknown")
_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})?$")
_BINARY_TYPES = ("application/grpc", "application/octet-stream", "application/x-protobuf", "application/protobuf")
_RESULT_KEYS = ("predictions", "outputs", "choices", "explanations")
_MAX_ERROR = 1000
_SSE_LINES = re.compile(r"\r\n|\r|\n")


def parse_time_us(text: str | None) -> int | None:
    """RFC 3339 with 0-9 fractional digits (``Z`` or an offset; none means UTC) to epoch microseconds
    (fractions beyond microseconds are truncated). ``None`` for anything else."""
    if not text:
        return None
    text = text.strip()
    if _TIME.match(text) is None:
        return None
    try:  # the common case in C; what it refuses (``t``/``z``, second 60, year 0, Feb 30...) goes the slow way
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return _parse_time_us_slow(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - _EPOCH) // _MICROSECOND


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _parse_time_us_slow(text: str) -> int | None:
    m = _TIME.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac = (m.group(7) or "").ljust(6, "0")[:6]
    try:
        secs = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    tz = m.group(8)
    if tz and tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        secs -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return secs * 1_000_000 + int(frac)


@dataclass(frozen=True)
class Side:
    """One logged event of a pair with where it was read from and its event time (µs)."""

    event: LoggedEvent
    partition: int
    offset: int
    time_us: int

    @property
    def is_request(self) -> bool:
        return self.event.type == REQUEST_TYPE


def event_time_us(ev: LoggedEvent, kafka_timestamp_us: int) -> int:
    """Event time: ``Ce-Time`` when present and valid, else the Kafka record timestamp (still a property of the
    input record, so deterministic on replay)."""
    parsed = parse_time_us(ev.time)
    return parsed if parsed is not None else kafka_timestamp_us


@dataclass(frozen=True)
class BodyInfo:
    """What a sniff of one body found."""

    protocol: str = "unknown"
    model_name: str | None = None
    model_version: str | None = None
    instance_count: int | None = None
    error: str | None = None  # an error object in a response
    unparseable: str | None = None  # why the body could not be parsed
    llm: llm.LlmInfo | None = None  # what an openai body tells (prompt; completion, tokens)


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _error_text(value: Any) -> str:
    if isinstance(value, dict):
        msg = value.get("message")
        text = msg if isinstance(msg, str) else json.dumps(value, sort_keys=True)
    else:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text[:_MAX_ERROR]


def _is_tensor_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, dict) and "name" in t and ("datatype" in t or "shape" in t) for t in value)
    )


def _sniff_object(obj: Any, *, response: bool) -> BodyInfo:
    if not isinstance(obj, dict):
        return BodyInfo()
    has_result = any(k in obj for k in _RESULT_KEYS)
    error = _error_text(obj["error"]) if response and "error" in obj and not has_result else None
    if "instances" in obj:
        inst = obj["instances"]
        return BodyInfo("v1", instance_count=len(inst) if isinstance(inst, list) else None, error=error)
    if "inputs" in obj:
        inputs = obj["inputs"]
        if _is_tensor_list(inputs):
            shape = inputs[0].get("shape")
            count = shape[0] if isinstance(shape, list) and shape and isinstance(shape[0], int) else None
            return BodyInfo(
                "v2",
                model_name=_str_or_none(obj.get("model_name")),
                model_version=_str_or_none(obj.get("model_version")),
                instance_count=count,
                error=error,
            )
        return BodyInfo("v1", instance_count=len(inputs) if isinstance(inputs, list) else None, error=error)
    if "predictions" in obj or "explanations" in obj:
        preds = obj.get("predictions")
        return BodyInfo("v1", instance_count=len(preds) if isinstance(preds, list) else None, error=error)
    if "outputs" in obj and (_is_tensor_list(obj["outputs"]) or "model_name" in obj):
        return BodyInfo(
            "v2",
            model_name=_str_or_none(obj.get("model_name")),
            model_version=_str_or_none(obj.get("model_version")),
            error=error,
        )
    obj_kind = obj.get("object")
    if (
        "messages" in obj
        or "prompt" in obj
        or "choices" in obj
        or (isinstance(obj_kind, str) and ("completion" in obj_kind or obj_kind == "list"))
    ):
        prompt = obj.get("prompt")
        count = len(prompt) if isinstance(prompt, list) and prompt and isinstance(prompt[0], str) else 1
        return BodyInfo(
            "openai",
            model_name=_str_or_none(obj.get("model")),
            instance_count=count if not response else None,
            error=error,
            llm=llm.from_response(obj) if response else llm.from_request(obj),
        )
    if "model_name" in obj:
        return BodyInfo(
            "v2",
            model_name=_str_or_none(obj.get("model_name")),
            model_version=_str_or_none(obj.get("model_version")),
            error=error,
        )
    return BodyInfo(error=error)


def _sniff_sse(text: str, *, response: bool) -> BodyInfo | None:
    """A concatenated SSE stream of JSON chunks (OpenAI ``stream: true``); ``None`` if it is not one."""
    chunks = []
    # SSE ends lines with CRLF, LF or CR only; str.splitlines would also cut at U+0085/U+2028/U+2029, which
    # JSON strings (an LLM's text) may carry raw
    for line in _SSE_LINES.split(text):
        line = line.strip()
        if not line or line.startswith(":"):
            continue
        if line.startswith("data:"):
            chunks.append(line[5:].strip())
        elif not line.startswith(("event:", "id:", "retry:")):
            return None
    if not chunks:
        return None
    model: str | None = None
    error: str | None = None
    objs: list[Any] = []
    for chunk in chunks:
        if chunk == "[DONE]":
            continue
        try:
            obj = orjson.loads(chunk)
        except orjson.JSONDecodeError:
            return BodyInfo("openai", unparseable=f"SSE chunk is not JSON: {chunk[:80]!r}")
        objs.append(obj)
        if isinstance(obj, dict):
            if model is None and isinstance(obj.get("model"), str):
                model = obj["model"]
            if response and error is None and "error" in obj and "choices" not in obj:
                error = _error_text(obj["error"])
    return BodyInfo("openai", model_name=model, error=error, llm=llm.from_stream(objs) if response else None)


def sniff(ev: LoggedEvent) -> BodyInfo:
    """Detect the protocol of one event's body and what it tells (model, instances, errors)."""
    if ev.dataref or not ev.data:
        return BodyInfo()
    response = ev.type == RESPONSE_TYPE
    try:
        obj = orjson.loads(ev.data)
    except orjson.JSONDecodeError:
        pass
    else:
        return _sniff_object(obj, response=response)
    ctype = (ev.datacontenttype or "").lower()
    if ctype.startswith(_BINARY_TYPES):
        return BodyInfo()
    try:
        text = ev.data.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    stripped = text.lstrip()
    if stripped.startswith(("data:", "event:", ":")):
        sse = _sniff_sse(text, response=response)
        if sse is not None:
            return sse
    if ev.data[:1] == b"{":
        # v2 binary-tensor extension: a JSON header followed by raw tensor bytes.
        head = ev.data.decode("latin-1")
        try:
            obj, _end = json.JSONDecoder().raw_decode(head)
        except ValueError:
            pass
        else:
            info = _sniff_object(obj, response=response)
            if info.protocol == "v2":
                return info
    return BodyInfo(unparseable=f"{'response' if response else 'request'} body is not JSON ({len(ev.data)} bytes)")


def _json_map(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def parse_metadata(text: str | None) -> dict[str, list[str]]:
    """``Ce-Metadata``: a JSON map of header name to list of values (a bare string value is accepted)."""
    out: dict[str, list[str]] = {}
    for key, value in _json_map(text).items():
        if isinstance(value, list):
            out[str(key)] = [v if isinstance(v, str) else json.dumps(v) for v in value]
        elif isinstance(value, str):
            out[str(key)] = [value]
    return out


def parse_annotations(text: str | None) -> dict[str, str]:
    """``Ce-Annotations``: a JSON map of string to string."""
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in _json_map(text).items()}


def trace_ids(metadata: Mapping[str, list[str]], extensions: Mapping[str, str]) -> tuple[str | None, ...]:
    """(trace_id, span_id, request_id) from W3C ``traceparent`` or B3 headers in ``Ce-Metadata`` (names matched
    case-insensitively), else the CloudEvents ``traceparent`` extension an intermediary may add."""
    low = {k.lower(): v[0] for k, v in metadata.items() if v}
    trace_id = span_id = None
    parent = low.get("traceparent") or extensions.get("traceparent")
    if parent:
        parts = parent.strip().split("-")
        if len(parts) >= 3 and len(parts[1]) == 32 and len(parts[2]) == 16:
            trace_id, span_id = parts[1].lower(), parts[2].lower()
    if trace_id is None and low.get("x-b3-traceid"):
        trace_id = low["x-b3-traceid"].strip().lower()
        span_id = (low.get("x-b3-spanid") or "").strip().lower() or None
    if trace_id is None and low.get("b3"):
        parts = low["b3"].strip().split("-")
        if len(parts) >= 2:
            trace_id, span_id = parts[0].lower(), parts[1].lower()
    return trace_id, span_id, low.get("x-request-id")


def _payload(side: Side) -> dict[str, Any]:
    ev = side.event
    return {
        "ce_type": ev.type,
        "time": parse_time_us(ev.time),
        "recorded_time": parse_time_us(ev.recordedtime),
        "content_type": ev.datacontenttype,
        "size": ev.size,
        "body": None if ev.dataref else ev.data,
        "dataref": ev.dataref,
        "sha256": ev.datasha256,
        "extensions": dict(ev.extensions),
        "partition": side.partition,
        "offset": side.offset,
    }


@dataclass(frozen=True)
class Built:
    """An ``InferenceRecord`` dict and the ``FailureSignal`` dicts that go with it."""

    record: dict[str, Any]
    failures: list[dict[str, Any]]


def _merge_protocol(req: BodyInfo | None, resp: BodyInfo | None) -> str:
    for info in (resp, req):
        if info is not None and info.protocol != "unknown":
            return info.protocol
    return "unknown"


def build(
    request: Side | None,
    response: Side | None,
    *,
    detected_us: int,
    model_metadata: Mapping[str, str] | None = None,
    ordinal: int = 1,
    retracts: str | None = None,
) -> Built:
    """The record of one inference (``request`` and/or ``response``) and its failure signals.

    ``status`` is ``complete`` with both sides, else ``request_only`` / ``response_only``. ``detected_us`` is the
    event time at which the record was decided (for a pair the later side's time; for an expired side its
    deadline), used as ``detected_time`` of failure signals. ``ordinal`` is the record's number among those of
    its join key. ``retracts`` makes revision 2 of a pair whose side came after the pair timeout: it supersedes
    the one-sided record, and its signals are a ``retraction`` of ``retracts`` plus those of the late side
    alone (the early side's were sent with the one-sided record). Pure: equal inputs give equal dicts.
    """
    first = request or response
    if first is None:
        raise ValueError("build() needs a request or a response")
    ev = first.event
    req_info = sniff(request.event) if request else None
    resp_info = sniff(response.event) if response else None
    protocol = _merge_protocol(req_info, resp_info)
    model_name = (resp_info and resp_info.model_name) or (req_info and req_info.model_name) or None
    model_version = (resp_info and resp_info.model_version) or (req_info and req_info.model_version) or None
    instance_count = (req_info and req_info.instance_count) or (resp_info and resp_info.instance_count)
    asked = (req_info and req_info.llm) if protocol == "openai" else None
    answered = ((resp_info and resp_info.llm) if protocol == "openai" else None) or llm.EMPTY

    metadata: dict[str, list[str]] = {}
    annotations: dict[str, str] = {}
    extensions: dict[str, str] = {}
    for side in (request, response):
        if side is None:
            continue
        for mk, mv in parse_metadata(side.event.metadata).items():
            metadata.setdefault(mk, mv)
        for ak, av in parse_annotations(side.event.annotations).items():
            annotations.setdefault(ak, av)
        for ek, ev_ in side.event.extensions.items():
            extensions.setdefault(ek, ev_)
    trace_id, span_id, request_id = trace_ids(metadata, extensions)

    errors = []
    if resp_info and resp_info.error:
        errors.append(f"error response: {resp_info.error}")
    for info in (req_info, resp_info):
        if info and info.unparseable:
            errors.append(info.unparseable)
    latency = (response.time_us - request.time_us) / 1000.0 if request and response else None
    status = "complete" if request and response else ("request_only" if request else "response_only")
    record: dict[str, Any] = {
        "join_key": ev.join_key,
        "ce_id": ev.id,
        "ce_source": ev.source,
        "namespace": ev.namespace,
        "isvc": ev.isvc,
        "component": ev.component,
        "endpoint": ev.endpoint,
        "status": status,
        "protocol": protocol,
        "model_name": model_name,
        "model_version": model_version,
        "event_time": first.time_us,
        "latency_ms": latency,
        "instance_count": instance_count,
        "request": _payload(request) if request else None,
        "response": _payload(response) if response else None,
        "metadata": metadata,
        "annotations": annotations,
        "trace_id": trace_id,
        "span_id": span_id,
        "request_id": request_id,
        "model_metadata": dict(model_metadata or {}),
        "error": "; ".join(errors)[:_MAX_ERROR] if errors else None,
        "llm_prompt": asked.prompt if asked else None,
        "llm_completion": answered.completion,
        "llm_finish_reason": answered.finish_reason,
        "llm_choices": answered.choices,
        "llm_prompt_tokens": answered.prompt_tokens,
        "llm_completion_tokens": answered.completion_tokens,
        "llm_total_tokens": answered.total_tokens,
        "ordinal": ordinal,
        "revision": 1 if retracts is None else 2,
    }

    def failure(kind: str, reason: str, side: Side, withdrawn: str | None = None) -> dict[str, Any]:
        return {
            "join_key": ev.join_key,
            "ce_id": ev.id,
            "namespace": ev.namespace,
            "isvc": ev.isvc,
            "component": ev.component,
            "kind": kind,
            "reason": reason,
            "model_name": model_name,
            "model_version": model_version,
            "protocol": protocol,
            "event_time": side.time_us,
            "detected_time": detected_us,
            "trace_id": trace_id,
            "request_id": request_id,
            "metadata": metadata,
            "annotations": annotations,
            "partition": side.partition,
            "offset": side.offset,
            "ordinal": ordinal,
            "retracts": withdrawn,
        }

    failures = []
    late = None
    if retracts is not None and request and response:
        late = response if retracts == "response_missing" else request
        failures.append(
            failure("retraction", f"the {late.event.type} came after the pair timeout: no {retracts}", late, retracts)
        )
    if request and not response:
        failures.append(
            failure("response_missing", "no response event within the pair timeout (non-200 answer?)", request)
        )
    if response and not request:
        failures.append(failure("request_missing", "no request event within the pair timeout", response))
    if response and resp_info and resp_info.error and late in (None, response):
        failures.append(failure("error_response", resp_info.error, response))
    for side, info in ((request, req_info), (response, resp_info)):
        if side and info and info.unparseable and late in (None, side):
            failures.append(failure("unparseable_body", info.unparseable, side))
    return Built(record, failures)
