"""How the console shows a logged body: pretty JSON, a server-sent-event stream as its events, base64 as such.

Everything here returns plain text; the templates escape it (payloads are untrusted input), and nothing is ever
marked safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import orjson


@dataclass(frozen=True)
class Body:
    side: str  # "request" | "response"
    kind: str  # "json" | "sse" | "text" | "base64" | "claim-checked" | "none"
    text: str = ""
    events: list[str] = field(default_factory=list)  # an SSE stream's data lines, each pretty when JSON
    truncated: bool = False
    size: int | None = None
    content_type: str | None = None
    dataref: str | None = None


def _pretty(text: str) -> str | None:
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return None


def _sse(text: str) -> list[str] | None:
    """The data of each event of a ``text/event-stream`` body, or ``None`` when it is not one."""
    lines = text.replace("\r\n", "\n").split("\n")
    data = [line[5:].lstrip() for line in lines if line.startswith("data:")]
    if not data or any(line and not line.startswith(("data:", "event:", "id:", "retry:", ":")) for line in lines):
        return None
    return [_pretty(d) or d for d in data]


def body(doc: dict[str, Any], side: str) -> Body:
    """The ``side`` body of a record document (as the OpenSearch sink indexed it)."""
    raw = doc.get(f"{side}_body")
    dataref = doc.get(f"{side}_dataref")
    size = doc.get(f"{side}_size")
    base = Body(
        side=side,
        kind="claim-checked" if raw is None and dataref else "none",
        truncated=bool(doc.get(f"{side}_body_truncated")),
        size=None if size is None else int(size),
        content_type=doc.get(f"{side}_content_type"),
        dataref=None if dataref is None else str(dataref),
    )
    if raw is None:
        return base
    text = str(raw)
    if doc.get(f"{side}_body_encoding") == "base64":
        return replace(base, kind="base64", text=text)
    if not base.truncated:
        pretty = _pretty(text)
        if pretty is not None:
            return replace(base, kind="json", text=pretty)
    events = _sse(text)
    if events is not None:
        return replace(base, kind="sse", text=text, events=events)
    return replace(base, kind="text", text=text)
