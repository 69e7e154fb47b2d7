"""The console's OpenSearch queries, as plain dicts built from validated inputs (pure: unit-tested without a server).

Time ranges are relative to "now" and fixed to a few choices, each with a histogram interval that gives the
charts 30-60 buckets. Every query filters on ``@timestamp`` (the record's event time), and on the namespaces a
caller may read (``namespaces``: ``None`` means all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: range name -> (seconds, histogram interval)
RANGES: dict[str, tuple[int, str]] = {
    "15m": (15 * 60, "30s"),
    "1h": (3600, "1m"),
    "6h": (6 * 3600, "10m"),
    "24h": (86400, "30m"),
    "7d": (7 * 86400, "3h"),
}
DEFAULT_RANGE = "1h"
STATUSES = ("complete", "request_only", "response_only")
PROTOCOLS = ("v1", "v2", "openai", "unknown")
PAGE_SIZE = 50
MAX_PAGE = 200  # OpenSearch's from + size stays far below index.max_result_window (10,000)
MAX_TEXT = 200
#: what free text searches: the bodies, the LLM texts, errors; ids are matched exactly
TEXT_FIELDS = ("request_body", "response_body", "llm_prompt", "llm_completion", "error")
ID_FIELDS = ("join_key", "ce_id", "request_id", "trace_id")


class QueryError(ValueError):
    """A console parameter that is not one of the accepted values (answered 400)."""


def time_range(name: str | None) -> tuple[str, int, str]:
    """(name, seconds, interval) of a range name; the default for ``None`` or empty."""
    name = name or DEFAULT_RANGE
    if name not in RANGES:
        raise QueryError(f"range must be one of {', '.join(RANGES)}")
    seconds, interval = RANGES[name]
    return name, seconds, interval


def _time_filter(seconds: int) -> dict[str, Any]:
    return {"range": {"@timestamp": {"gte": f"now-{seconds}s", "lte": "now"}}}


def _scope(namespaces: Sequence[str] | None) -> list[dict[str, Any]]:
    return [] if namespaces is None else [{"terms": {"namespace": list(namespaces)}}]


def _model(namespace: str, isvc: str) -> list[dict[str, Any]]:
    return [{"term": {"namespace": namespace}}, {"term": {"isvc": isvc}}]


def _per_model_aggs(interval: str, seconds: int) -> dict[str, Any]:
    return {
        "failed": {"filter": {"term": {"status": "request_only"}}},
        "latency": {"percentiles": {"field": "latency_ms", "percents": [50, 99]}},
        "tokens": {"sum": {"field": "llm_total_tokens"}},
        "with_tokens": {"value_count": {"field": "llm_total_tokens"}},
        "over_time": {
            "date_histogram": {
                "field": "@timestamp",
                "fixed_interval": interval,
                "min_doc_count": 0,
                "extended_bounds": {"min": f"now-{seconds}s", "max": "now"},
            },
            "aggs": {
                "failed": {"filter": {"term": {"status": "request_only"}}},
                "latency": {"percentiles": {"field": "latency_ms", "percents": [50, 99]}},
                "tokens": {"sum": {"field": "llm_total_tokens"}},
            },
        },
    }


def overview(range_name: str | None, namespaces: Sequence[str] | None = None, max_models: int = 500) -> dict[str, Any]:
    """Per namespace/isvc in the range: count, request_only share, p50/p99 latency, tokens, and each over time."""
    _, seconds, interval = time_range(range_name)
    return {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": [_time_filter(seconds), *_scope(namespaces)]}},
        "aggs": {
            "models": {
                "multi_terms": {"terms": [{"field": "namespace"}, {"field": "isvc"}], "size": max_models},
                "aggs": _per_model_aggs(interval, seconds),
            }
        },
    }


def model(namespace: str, isvc: str, range_name: str | None) -> dict[str, Any]:
    """One model's totals and charts over the range."""
    _, seconds, interval = time_range(range_name)
    return {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": [_time_filter(seconds), *_model(namespace, isvc)]}},
        "aggs": _per_model_aggs(interval, seconds),
    }


@dataclass(frozen=True)
class RecordFilter:
    status: str | None = None
    protocol: str | None = None
    text: str | None = None
    page: int = 0

    @classmethod
    def parse(cls, params: dict[str, str]) -> RecordFilter:
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            raise QueryError(f"status must be one of {', '.join(STATUSES)}")
        protocol = params.get("protocol") or None
        if protocol is not None and protocol not in PROTOCOLS:
            raise QueryError(f"protocol must be one of {', '.join(PROTOCOLS)}")
        text = (params.get("q") or "").strip() or None
        if text is not None and len(text) > MAX_TEXT:
            raise QueryError(f"the search text is longer than {MAX_TEXT} characters")
        raw_page = params.get("page") or "0"
        if not raw_page.isdigit() or int(raw_page) > MAX_PAGE:
            raise QueryError(f"page must be a number within 0..{MAX_PAGE}")
        return cls(status, protocol, text, int(raw_page))


#: the fields the records table shows (the bodies are fetched on the record's own page)
LIST_FIELDS = (
    "join_key", "ce_id", "status", "protocol", "model_name", "event_time", "latency_ms", "llm_total_tokens",
    "revision", "ordinal", "error", "request_size", "response_size",
)  # fmt: skip


def records(namespace: str, isvc: str, range_name: str | None, flt: RecordFilter) -> dict[str, Any]:
    """A page of one model's records, newest first, filtered by status, protocol and free text."""
    _, seconds, _ = time_range(range_name)
    filters: list[dict[str, Any]] = [_time_filter(seconds), *_model(namespace, isvc)]
    if flt.status:
        filters.append({"term": {"status": flt.status}})
    if flt.protocol:
        filters.append({"term": {"protocol": flt.protocol}})
    query: dict[str, Any] = {"bool": {"filter": filters}}
    if flt.text:
        query["bool"]["must"] = [
            {
                "bool": {
                    "should": [
                        # simple_query_string never fails on odd syntax (unlike query_string)
                        {"simple_query_string": {"query": flt.text, "fields": list(TEXT_FIELDS), "lenient": True}},
                        *({"term": {f: flt.text}} for f in ID_FIELDS),
                        {"term": {"metadata": flt.text}},
                        {"term": {"annotations": flt.text}},
                    ],
                    "minimum_should_match": 1,
                }
            }
        ]
    return {
        "size": PAGE_SIZE,
        "from": flt.page * PAGE_SIZE,
        "track_total_hits": True,
        "sort": [{"@timestamp": "desc"}, {"join_key": "asc"}],
        "_source": list(LIST_FIELDS),
        "query": query,
    }


def failures(namespace: str, isvc: str, range_name: str | None, size: int = 20) -> dict[str, Any]:
    """The latest failure signals of one model."""
    _, seconds, _ = time_range(range_name)
    return {
        "size": size,
        "sort": [{"@timestamp": "desc"}],
        "_source": ["join_key", "ce_id", "kind", "reason", "event_time", "detected_time", "retracts", "ordinal"],
        "query": {"bool": {"filter": [_time_filter(seconds), *_model(namespace, isvc)]}},
    }


def by_id(doc_id: str) -> dict[str, Any]:
    """The one record whose ``_id`` (the record's identity) is ``doc_id``."""
    return {"size": 1, "query": {"ids": {"values": [doc_id]}}}
