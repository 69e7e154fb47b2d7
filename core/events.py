"""A logged CloudEvent and its Kafka binary binding: the contract between ingest and streams.

On ``inferlog.events`` one record is one CloudEvent in the CloudEvents **Kafka binary binding**:

- key: the join key ``namespace/isvc/component/ce-id`` (UTF-8);
- value: the raw HTTP body bytes (empty for an empty body; empty too when claim-checked);
- headers: ``ce_<attribute>`` for every context attribute and extension, value as UTF-8 text
  (``ce_specversion``, ``ce_id``, ``ce_source``, ``ce_type``, ``ce_time``, ``ce_inferenceservicename``,
  ``ce_namespace``, ``ce_component``, ``ce_endpoint``, ``ce_metadata``, ``ce_annotations``,
  ``ce_recordedtime``, and any unknown extension as sent); ``content-type`` for ``datacontenttype`` when
  present. A claim-checked body adds ``ce_dataref`` (``s3://bucket/key``), ``ce_datasize`` (original byte
  length) and ``ce_datasha256`` (hex digest).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from core.errors import InferlogError
from core.keys import join_key

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"

# Attributes with a dedicated field; everything else is kept in ``extensions``.
_KNOWN = (
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "inferenceservicename",
    "namespace",
    "component",
    "endpoint",
    "metadata",
    "annotations",
    "recordedtime",
    "dataref",
    "datasize",
    "datasha256",
)
_KNOWN_SET = frozenset(_KNOWN)
REQUIRED = ("specversion", "id", "source", "type")


class EventError(InferlogError):
    """An event lacks a required attribute or has an invalid one. ``attribute`` names it."""

    def __init__(self, attribute: str, message: str) -> None:
        super().__init__(message, retriable=False)
        self.attribute = attribute


@dataclass(frozen=True)
class LoggedEvent:
    """One KServe payload-logger CloudEvent as inferlog stores it."""

    id: str
    source: str
    type: str
    specversion: str = "1.0"
    time: str | None = None
    datacontenttype: str | None = None
    namespace: str = ""
    isvc: str = ""
    component: str = ""
    endpoint: str = ""
    metadata: str | None = None  # Ce-Metadata as sent: JSON map of lists
    annotations: str | None = None  # Ce-Annotations as sent: JSON map
    recordedtime: str | None = None
    extensions: Mapping[str, str] = field(default_factory=dict)
    data: bytes = b""
    dataref: str | None = None
    datasize: int | None = None
    datasha256: str | None = None

    @property
    def join_key(self) -> str:
        return join_key(self.namespace, self.isvc, self.component, self.id)

    @property
    def is_request(self) -> bool:
        return self.type == REQUEST_TYPE

    @property
    def is_response(self) -> bool:
        return self.type == RESPONSE_TYPE

    @property
    def size(self) -> int:
        return self.datasize if self.dataref and self.datasize is not None else len(self.data)

    def attributes(self) -> dict[str, str]:
        """Context attributes and extensions by CloudEvents name (no data, no datacontenttype)."""
        out = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "inferenceservicename": self.isvc,
            "namespace": self.namespace,
            "component": self.component,
            "endpoint": self.endpoint,
        }
        optional = {
            "time": self.time,
            "metadata": self.metadata,
            "annotations": self.annotations,
            "recordedtime": self.recordedtime,
            "dataref": self.dataref,
            "datasize": None if self.datasize is None else str(self.datasize),
            "datasha256": self.datasha256,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        out.update(self.extensions)
        return out


def to_kafka(ev: LoggedEvent) -> tuple[bytes, list[tuple[str, bytes]], bytes]:
    """(key, headers, value) of the Kafka binary binding: ``ce_*`` headers in the order of
    :meth:`LoggedEvent.attributes`, then ``content-type``."""
    ext = ev.extensions
    if ext and not _KNOWN_SET.isdisjoint(ext):  # an extension shadowing a field (only built by hand): as attributes()
        headers = [(f"ce_{name}", value.encode()) for name, value in ev.attributes().items()]
    else:  # the same headers without the intermediate dicts (the ingest's hot path)
        headers = [
            ("ce_specversion", ev.specversion.encode()),
            ("ce_id", ev.id.encode()),
            ("ce_source", ev.source.encode()),
            ("ce_type", ev.type.encode()),
            ("ce_inferenceservicename", ev.isvc.encode()),
            ("ce_namespace", ev.namespace.encode()),
            ("ce_component", ev.component.encode()),
            ("ce_endpoint", ev.endpoint.encode()),
        ]
        if ev.time is not None:
            headers.append(("ce_time", ev.time.encode()))
        if ev.metadata is not None:
            headers.append(("ce_metadata", ev.metadata.encode()))
        if ev.annotations is not None:
            headers.append(("ce_annotations", ev.annotations.encode()))
        if ev.recordedtime is not None:
            headers.append(("ce_recordedtime", ev.recordedtime.encode()))
        if ev.dataref is not None:
            headers.append(("ce_dataref", ev.dataref.encode()))
        if ev.datasize is not None:
            headers.append(("ce_datasize", str(ev.datasize).encode()))
        if ev.datasha256 is not None:
            headers.append(("ce_datasha256", ev.datasha256.encode()))
        for name, value in ext.items():
            headers.append((f"ce_{name}", value.encode()))
    if ev.datacontenttype is not None:
        headers.append(("content-type", ev.datacontenttype.encode()))
    return ev.join_key.encode(), headers, ev.data


def from_attributes(attrs: Mapping[str, str], data: bytes, datacontenttype: str | None = None) -> LoggedEvent:
    """Build and validate an event from attribute names (lower case, no prefix) to text values."""
    for name in REQUIRED:
        if not attrs.get(name):
            raise EventError(name, f"missing required CloudEvents attribute '{name}'")
    size_raw = attrs.get("datasize")
    try:
        datasize = int(size_raw) if size_raw not in (None, "") else None
    except ValueError:
        raise EventError("datasize", f"attribute 'datasize' is not an integer: {size_raw!r}") from None
    return LoggedEvent(
        id=attrs["id"],
        source=attrs["source"],
        type=attrs["type"],
        specversion=attrs["specversion"],
        time=attrs.get("time") or None,
        datacontenttype=datacontenttype,
        namespace=attrs.get("namespace", ""),
        isvc=attrs.get("inferenceservicename", ""),
        component=attrs.get("component", ""),
        endpoint=attrs.get("endpoint", ""),
        metadata=attrs.get("metadata"),
        annotations=attrs.get("annotations"),
        recordedtime=attrs.get("recordedtime") or None,
        extensions={k: v for k, v in attrs.items() if k not in _KNOWN_SET},
        data=data,
        dataref=attrs.get("dataref") or None,
        datasize=datasize,
        datasha256=attrs.get("datasha256") or None,
    )


# Kafka header name -> attribute name (_CONTENT_TYPE for content-type, None for a header that is not part of
# the event); bounded, since extension names come from callers.
_HEADER_ATTR: dict[str, str | None] = {}
_HEADER_ATTR_MAX = 4096
_CONTENT_TYPE = "\x00content-type"  # not an attribute name


def _header_attr(name: str) -> str | None:
    attr = _HEADER_ATTR.get(name, 0)
    if attr != 0:
        return attr  # type: ignore[return-value]
    low = name.lower()
    attr = low[3:] if low.startswith("ce_") else (_CONTENT_TYPE if low == "content-type" else None)
    if len(_HEADER_ATTR) < _HEADER_ATTR_MAX:
        _HEADER_ATTR[name] = attr
    return attr


def from_kafka(headers: Sequence[tuple[str, bytes | None]] | None, value: bytes | None) -> LoggedEvent:
    """Parse a record of ``inferlog.events``; raises :class:`EventError` naming a bad attribute."""
    attrs: dict[str, str] = {}
    content_type: str | None = None
    for name, raw in headers or ():
        attr = _header_attr(name)
        if attr is None:
            continue
        text = raw.decode("utf-8", errors="replace") if raw else ""
        if attr is _CONTENT_TYPE:
            content_type = text
        else:
            attrs[attr] = text
    return from_attributes(attrs, value or b"", content_type)


def fingerprint(ev: LoggedEvent, time_fallback: int) -> str:
    """What makes a logged event *the same event*, for deduplication (the join and the reconciliation):
    ``(source, id, type)`` refined by its occurrence time (``Ce-Time``, else ``time_fallback``, its Kafka
    timestamp in µs) and a digest of its body. A redelivered event is the same; a caller that reuses an id
    for a new call (a retry with the same ``Ce-Id``) makes a different event."""
    digest = ev.datasha256 or hashlib.blake2b(ev.data, digest_size=8).hexdigest()
    return f"{ev.source}\x1f{ev.id}\x1f{ev.type}\x1f{ev.time or time_fallback}\x1f{digest}"
