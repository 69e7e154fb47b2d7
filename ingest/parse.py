"""HTTP request → :class:`~core.events.LoggedEvent`: every wire format a KServe logger (or an
intermediary) may use.

- **Binary mode** (what every KServe version sends): ``Ce-*`` headers matched case-insensitively, the raw body
  as data, ``Content-Type`` (possibly absent) as ``datacontenttype``. Unknown extensions are kept.
- **Legacy spec 0.2/0.3** (kfserving ≤ 0.4): extension values JSON-quoted (``ce-namespace: "default"``); the
  quotes are stripped and the event is stored as CloudEvents 1.0.
- **Structured mode** (``application/cloudevents+json``) and **batch** (``application/cloudevents-batch+json``).

The CloudEvents SDK is not used here: its decoders make up a missing ``id`` or ``time`` (a uuid, the current
time) where this module must answer 400 naming the attribute and keep the event replayable as sent, and its
errors do not name the attribute. ``tests/unit/test_ingest_parse_sdk.py`` checks the binary-mode path against
the SDK's ``from_http``; :func:`inferlog.analytics.iter_cloudevents` gives consumers SDK objects.

Any problem raises :class:`~ingest.errors.BadEvent` naming the attribute (→ 400), or
:class:`~ingest.errors.UnsupportedFormat` (→ 415). Nothing here raises anything else on any input.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from typing import Any

import orjson

from core.events import EventError, LoggedEvent, from_attributes
from ingest.errors import BadEvent, UnsupportedFormat

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
SPECVERSIONS = ("1.0", "0.3", "0.2")

_NAME = re.compile(r"^[a-z0-9]{1,64}$")
_HEADER_ATTRS: dict[str, str] = {}  # HTTP header name as spelled → attribute name ("" = not Ce-*); see _header_attr
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
# Renamed between 0.2/0.3 and 1.0.
_LEGACY_RENAMES = {"schemaurl": "dataschema"}
_CONTEXT = {"specversion", "id", "source", "type", "time", "subject", "dataschema", "schemaurl", "datacontenttype"}


_MEDIA_TYPES: dict[str | None, str] = {}  # Content-Type as sent → media type (bounded memo: one lookup per request)
_VALID_MAPS: set[tuple[str, bool]] = set()  # (Ce-Metadata / Ce-Annotations text, list_values) already validated
_MEMO_MAX = 1024
_MEMO_TEXT_MAX = 512  # longer texts are validated every time instead of remembered


def media_type(content_type: str | None) -> str:
    mt = _MEDIA_TYPES.get(content_type)
    if mt is None:
        mt = (content_type or "").split(";", 1)[0].strip().lower()
        if len(_MEDIA_TYPES) < _MEMO_MAX and (content_type is None or len(content_type) <= _MEMO_TEXT_MAX):
            _MEDIA_TYPES[content_type] = mt
    return mt


def parse(headers: Iterable[tuple[str, str]], body: bytes, content_type: str | None) -> list[LoggedEvent]:
    """Parse one HTTP request into its events (one, except in batch mode)."""
    mt = media_type(content_type)
    if mt == STRUCTURED:
        return [parse_structured(_json(body, "data"))]
    if mt == BATCH:
        doc = _json(body, "data")
        if not isinstance(doc, list):
            raise BadEvent("data", "a cloudevents-batch body must be a JSON array of events")
        out = []
        for i, item in enumerate(doc):
            try:
                out.append(parse_structured(item))
            except BadEvent as exc:
                raise BadEvent(exc.attribute or "data", f"event [{i}]: {exc}", index=i) from None
        return out
    if mt.startswith("application/cloudevents"):
        raise UnsupportedFormat(f"structured event format {mt!r} is not supported (use application/cloudevents+json)")
    return [parse_binary(headers, body, content_type)]


def parse_binary(headers: Iterable[tuple[str, str]], body: bytes, content_type: str | None) -> LoggedEvent:
    attrs: dict[str, str] = {}
    names = _HEADER_ATTRS
    for name, value in headers:
        attr = names.get(name)
        if attr is None:
            attr = _header_attr(name)
        if not attr:  # not a Ce-* header
            continue
        if attr in attrs:
            raise BadEvent(attr, f"attribute {attr!r} sent more than once")
        attrs[attr] = value if value.isascii() else _text(value, attr)
    if content_type is not None and not content_type.isascii():
        content_type = _text(content_type, "datacontenttype")
    if "datacontenttype" in attrs:  # binary mode carries it in Content-Type, never as a ce- header
        raise BadEvent("datacontenttype", "binary mode carries datacontenttype in Content-Type, not Ce-Datacontenttype")
    return _build(_upgrade(attrs, quoted_extensions=True), body, content_type or None)


def _header_attr(name: str) -> str:
    """The CloudEvents attribute an HTTP header name carries ("" for a header that is not ``Ce-*``); raises
    :class:`BadEvent` for a ``Ce-*`` name that is not a valid attribute name. Valid spellings are memoised
    (bounded), so the hot path is one dict lookup per header."""
    if name[:3].lower() != "ce-":
        attr = ""
    else:
        attr = name[3:].lower()
        if not _NAME.match(attr):
            raise BadEvent(attr or name, f"header {name!r}: CloudEvents attribute names are lower-case a-z0-9")
    if len(_HEADER_ATTRS) < 4096:
        _HEADER_ATTRS[name] = attr
    return attr


def parse_structured(doc: Any) -> LoggedEvent:
    if not isinstance(doc, dict):
        raise BadEvent("data", "a structured event must be a JSON object")
    attrs: dict[str, str] = {}
    for name, value in doc.items():
        if name in ("data", "data_base64", "datacontenttype"):
            continue
        if not _NAME.match(name):
            raise BadEvent(name or '""', f"attribute {name!r}: CloudEvents attribute names are lower-case a-z0-9")
        attrs[name] = _attr_text(name, value)
    ct_raw = doc.get("datacontenttype")
    if ct_raw is not None and not isinstance(ct_raw, str):
        raise BadEvent("datacontenttype", "datacontenttype must be a string")
    content_type: str | None = ct_raw or None
    if "data" in doc and "data_base64" in doc:
        raise BadEvent("data_base64", "an event has either data or data_base64, not both")
    data = b""
    if "data_base64" in doc:
        raw = doc["data_base64"]
        if not isinstance(raw, str):
            raise BadEvent("data_base64", "data_base64 must be a string")
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise BadEvent("data_base64", "data_base64 is not valid base64") from None
    elif "data" in doc and doc["data"] is not None:
        value = doc["data"]
        mt = media_type(content_type)
        if isinstance(value, str) and mt and not (mt.endswith("/json") or mt.endswith("+json")):
            data = value.encode("utf-8", "surrogatepass")
        else:
            try:
                data = orjson.dumps(value)
            except TypeError:
                raise BadEvent("data", "data is not JSON-serialisable") from None
    return _build(_upgrade(attrs, quoted_extensions=False), data, content_type)


def _build(attrs: dict[str, str], data: bytes, content_type: str | None) -> LoggedEvent:
    for name in ("time", "recordedtime"):
        value = attrs.get(name)
        if value and not _TIME.match(value):
            raise BadEvent(name, f"attribute {name!r} is not an RFC 3339 timestamp: {value[:64]!r}")
    if attrs.get("metadata"):
        _check_map(attrs["metadata"], "metadata", list_values=True)
    if attrs.get("annotations"):
        _check_map(attrs["annotations"], "annotations", list_values=False)
    if "dataref" in attrs or "datasize" in attrs or "datasha256" in attrs:
        raise BadEvent("dataref", "dataref/datasize/datasha256 are set by the ingest's claim check, not by senders")
    try:
        return from_attributes(attrs, data, content_type)
    except EventError as exc:
        raise BadEvent(exc.attribute, str(exc)) from None


def _upgrade(attrs: dict[str, str], *, quoted_extensions: bool) -> dict[str, str]:
    """Validate the spec version; store legacy 0.2/0.3 events as 1.0 (quotes stripped, renames applied)."""
    version = attrs.get("specversion")
    if not version:
        raise BadEvent("specversion", "missing required CloudEvents attribute 'specversion'")
    if version not in SPECVERSIONS:
        raise BadEvent("specversion", f"unsupported specversion {version[:16]!r}; expected one of {list(SPECVERSIONS)}")
    if version == "1.0":
        return attrs
    out: dict[str, str] = {}
    for name, value in attrs.items():
        name = _LEGACY_RENAMES.get(name, name)
        if quoted_extensions and name not in _CONTEXT:
            value = _unquote(value)
        out[name] = value
    out["specversion"] = "1.0"
    return out


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        if isinstance(decoded, str):
            return decoded
    return value


def _text(value: str, attr: str) -> str:
    """Header values arrive decoded with surrogateescape: reject what is not valid UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadEvent(attr, f"attribute {attr!r} is not valid UTF-8") from None
    return value


def _attr_text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _text(value, name)
    if isinstance(value, int | float):
        return str(value)
    raise BadEvent(name, f"attribute {name!r} must be a string, number or boolean")


def _json(body: bytes, attr: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadEvent(attr, f"body is not valid JSON: {exc}") from None


def _check_map(raw: str, attr: str, *, list_values: bool) -> None:
    """Raise :class:`BadEvent` unless ``raw`` is a JSON object of strings (``list_values``: of lists of strings).
    Texts that passed are remembered (bounded): a model's annotations are the same on every request."""
    if (raw, list_values) in _VALID_MAPS:
        return
    _validate_map(raw, attr, list_values=list_values)
    if len(raw) <= _MEMO_TEXT_MAX:
        if len(_VALID_MAPS) >= _MEMO_MAX:
            _VALID_MAPS.clear()
        _VALID_MAPS.add((raw, list_values))


def _validate_map(raw: str, attr: str, *, list_values: bool) -> None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadEvent(attr, f"attribute {attr!r} is not a JSON object") from None
    if not isinstance(doc, dict):
        raise BadEvent(attr, f"attribute {attr!r} is not a JSON object")
    for key, value in doc.items():
        ok = (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
            if list_values
            else isinstance(value, str)
        )
        if not ok:
            kind = "a list of strings" if list_values else "a string"
            raise BadEvent(attr, f"attribute {attr!r}: the value of {key!r} is not {kind}")


def problem(exc: BadEvent | Exception, status: int) -> dict[str, Any]:
    """An RFC 9457 problem document."""
    doc: dict[str, Any] = {"type": "about:blank", "status": status, "detail": str(exc)}
    attribute = getattr(exc, "attribute", None)
    if attribute:
        doc["attribute"] = attribute
    index = getattr(exc, "index", None)
    if index is not None:
        doc["index"] = index
    return doc
