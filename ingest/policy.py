"""What the ingest decides per event before anything is written: who may write (per-namespace tokens, in
``Authorization`` or in ``logger.url``, or the caller's mesh identity), whether to keep it (sampling by a hash
of the join key, so a request and its response share the decision), and what to hide (redaction of JSON body
fields and of headers)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson

from core.events import LoggedEvent
from ingest.config import IngestConfig
from ingest.errors import Forbidden, Unauthorized

REDACTED = "[REDACTED]"


#: where a token may travel besides ``Authorization``: ``logger.url`` = ``http://host/token/<token>`` (a path segment
#: KServe's agent posts to as it is given) or ``http://host/?token=<token>``
TOKEN_PATH_PREFIX = "/token/"
TOKEN_QUERY = "token"
XFCC_HEADER = "X-Forwarded-Client-Cert"


@dataclass(frozen=True)
class Credentials:
    """What a request presents: a bearer token (header, URL path or query, first found) and the raw XFCC."""

    token: str | None = field(default=None, repr=False)
    xfcc: str | None = None

    @classmethod
    def of(cls, headers: Mapping[str, str], path: str, query: Mapping[str, str]) -> Credentials:
        token = None
        scheme, _, value = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            token = value.strip()
        elif path.startswith(TOKEN_PATH_PREFIX):
            token = unquote(path[len(TOKEN_PATH_PREFIX) :].split("/", 1)[0]) or None
        elif query.get(TOKEN_QUERY):
            token = query[TOKEN_QUERY]
        return cls(token, headers.get(XFCC_HEADER))


def spiffe_namespace(xfcc: str, trust_domain: str) -> str | None:
    """The namespace of the caller's SPIFFE id ``spiffe://<trust_domain>/ns/<ns>/sa/<sa>`` in the XFCC element
    the nearest proxy added (the last one), or ``None``."""
    element = xfcc.rsplit(",", 1)[-1]
    prefix = f"spiffe://{trust_domain}/ns/"
    for part in element.split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() != "uri":
            continue
        uri = value.strip().strip('"')
        if uri.startswith(prefix):
            ns, _, rest = uri[len(prefix) :].partition("/")
            if ns and rest.startswith("sa/") and len(rest) > 3:
                return ns
    return None


class Auth:
    """Who may write which namespace. A bearer token is configured per namespace (``'*'``: any); KServe's agent
    sends no ``Authorization`` header, so the token may also travel in ``logger.url`` (:class:`Credentials`).
    With ``xfcc_trust_domain`` set, a caller whose mesh identity (Istio's ``X-Forwarded-Client-Cert``) is in
    namespace N may write N. A credential for A cannot write an event claiming namespace B (403); none, or an
    unknown token, is 401. Tokens are compared in constant time (digests, every configured token each time)."""

    def __init__(self, tokens: dict[str, str], xfcc_trust_domain: str = "") -> None:
        self._digests = [(hashlib.sha256(t.encode()).digest(), ns) for t, ns in tokens.items()]
        self.xfcc_trust_domain = xfcc_trust_domain

    def __repr__(self) -> str:
        return f"Auth(tokens={len(self._digests)}, xfcc_trust_domain={self.xfcc_trust_domain!r})"

    @property
    def enabled(self) -> bool:
        return bool(self._digests) or bool(self.xfcc_trust_domain)

    def _token_namespace(self, token: str) -> str | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for known, namespace in self._digests:  # no early exit: the time does not say which token matched
            if hmac.compare_digest(digest, known):
                found = namespace
        return found

    def check(self, credentials: Credentials, events: Sequence[LoggedEvent]) -> None:
        if not self.enabled:
            return
        namespace, how = self.identify(credentials)
        if namespace == "*":
            return
        for ev in events:
            if ev.namespace != namespace:
                raise Forbidden(f"{how} may write namespace {namespace!r}, not {ev.namespace!r}", attribute="namespace")

    def identify(self, credentials: Credentials) -> tuple[str, str]:
        """(the namespace the credentials stand for, ``'*'`` for any; what they are, for messages), or
        :class:`Unauthorized`."""
        if credentials.token is not None:
            namespace = self._token_namespace(credentials.token)
            if namespace is None:
                raise Unauthorized("unknown token")
            how = "this token"
        elif self.xfcc_trust_domain and credentials.xfcc:
            namespace = spiffe_namespace(credentials.xfcc, self.xfcc_trust_domain)
            if namespace is None:
                raise Unauthorized(f"no SPIFFE id of trust domain {self.xfcc_trust_domain!r} in {XFCC_HEADER}")
            how = "this mesh identity"
        else:
            where = f"Authorization: Bearer, {TOKEN_PATH_PREFIX}<token> or ?{TOKEN_QUERY}= in logger.url"
            raise Unauthorized(f"a token is required ({where})")
        return namespace, how


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
            Auth(cfg.tokens(), cfg.auth_xfcc_trust_domain),
            Sampler(cfg.sampling_rates()),
            Redactor(cfg.redacted_field_paths(), cfg.redacted_header_names()),
        )
