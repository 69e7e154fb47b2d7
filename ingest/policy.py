"""What the ingest decides per event before anything is written: who may write (per-namespace bearer
tokens), whether to keep it (sampling by a hash of the join key, so a request and its response share the
decision), and what to hide (redaction of JSON body fields and of headers)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

from core.events import LoggedEvent
from ingest.config import IngestConfig
from ingest.errors import Forbidden, Unauthorized

REDACTED = "[REDACTED]"


class Auth:
    """Bearer tokens per namespace. A token for namespace A cannot write an event claiming namespace B."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens  # token → namespace ('*' = any)

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)

    def check(self, authorization: str | None, events: Sequence[LoggedEvent]) -> None:
        if not self.enabled:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
        namespace = self.tokens.get(token.strip())
        if namespace is None:
            raise Unauthorized("unknown bearer token")
        if namespace == "*":
            return
        for ev in events:
            if ev.namespace != namespace:
                raise Forbidden(
                    f"this token may write namespace {namespace!r}, not {ev.namespace!r}", attribute="namespace"
                )


class Sampler:
    """Keep an event with probability ``rate(namespace, isvc)``, decided by a hash of its join key.

    The rate is looked up as ``ns/isvc``, then ``ns``, then ``*``; absent means 1. The hash (blake2b, not the
    partitioner's murmur2, so the decision is independent of the partition) is the same for the request and
    the response of one inference, so both are kept or both are dropped.
    """

    def __init__(self, rates: dict[str, float]) -> None:
        self.rates = rates

    @property
    def enabled(self) -> bool:
        return bool(self.rates)

    def rate(self, namespace: str, isvc: str) -> float:
        for key in (f"{namespace}/{isvc}", namespace, "*"):
            if key in self.rates:
                return self.rates[key]
        return 1.0

    def keep(self, ev: LoggedEvent) -> bool:
        if not self.rates:
            return True
        rate = self.rate(ev.namespace, ev.isvc)
        if rate >= 1.0:
            return True
        if rate <= 0.0:
            return False
        return unit_hash(ev.join_key) < rate


def unit_hash(key: str) -> float:
    """A uniform number in [0, 1) from ``key``."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Redactor:
    """Replace configured JSON fields of the body and configured headers with ``[REDACTED]``.

    Field paths are dotted (``customer.ssn``), matched from the root with arrays traversed transparently
    (``inputs.data`` hides ``data`` of every input); a ``**.`` prefix matches at any depth (``**.password``).
    Headers are matched case-insensitively against Ce-Metadata keys, Ce-Annotations keys and extension names.
    A body that is not JSON, or in which nothing matched, is kept byte for byte.
    """

    def __init__(self, field_paths: list[str], header_names: list[str]) -> None:
        self.paths = [p.split(".") for p in field_paths]
        self.headers = {h.lower() for h in header_names}

    @property
    def enabled(self) -> bool:
        return bool(self.paths or self.headers)

    def apply(self, ev: LoggedEvent) -> LoggedEvent:
        if not self.enabled:
            return ev
        changes: dict[str, Any] = {}
        if self.paths and ev.data[:1] in (b"{", b"["):
            try:
                doc = orjson.loads(ev.data)
            except orjson.JSONDecodeError:
                doc = None
            if doc is not None and any([_redact(doc, path) for path in self.paths]):
                changes["data"] = orjson.dumps(doc)
        if self.headers:
            if ev.metadata:
                meta = _redact_map(ev.metadata, self.headers, [REDACTED])
                if meta is not None:
                    changes["metadata"] = meta
            if ev.annotations:
                ann = _redact_map(ev.annotations, self.headers, REDACTED)
                if ann is not None:
                    changes["annotations"] = ann
            if any(k in self.headers for k in ev.extensions):
                changes["extensions"] = {k: (REDACTED if k in self.headers else v) for k, v in ev.extensions.items()}
        return dataclasses.replace(ev, **changes) if changes else ev


def _redact(node: Any, path: list[str]) -> bool:
    """Redact ``path`` in ``node`` in place; True when something was replaced."""
    if isinstance(node, list):
        return any([_redact(item, path) for item in node])
    if not isinstance(node, dict) or not path:
        return False
    head, rest = path[0], path[1:]
    if head == "**":
        hit = _redact(node, rest)
        for value in node.values():
            hit = _redact(value, path) or hit
        return hit
    if head not in node:
        return False
    if not rest:
        node[head] = REDACTED
        return True
    return _redact(node[head], rest)


def _redact_map(raw: str, names: set[str], replacement: Any) -> str | None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not any(k.lower() in names for k in doc):
        return None
    out = {k: (replacement if k.lower() in names else v) for k, v in doc.items()}
    return orjson.dumps(out, option=orjson.OPT_SORT_KEYS).decode()


@dataclasses.dataclass
class Policy:
    auth: Auth
    sampler: Sampler
    redactor: Redactor

    @property
    def filtering(self) -> bool:
        """Whether sampling or redaction may drop or change an event (else events pass as they are)."""
        return self.sampler.enabled or self.redactor.enabled

    @classmethod
    def from_config(cls, cfg: IngestConfig) -> Policy:
        return cls(
            Auth(cfg.tokens()),
            Sampler(cfg.sampling_rates()),
            Redactor(cfg.redacted_field_paths(), cfg.redacted_header_names()),
        )
