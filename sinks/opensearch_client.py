"""The search sink's HTTP side: the few OpenSearch calls it makes (``_bulk``, index templates, ``GET /``), made
with opensearch-py's transport.

- **Auth**: basic auth (``opensearch_user`` / ``opensearch_password``), or AWS SigV4 for Amazon OpenSearch Service
  when ``opensearch_aws_region`` is set (credentials from boto3's default chain: environment, IRSA web identity,
  instance profile, …; ``opensearch_aws_service`` ``es`` for domains, ``aoss`` for Serverless).
- **No retries of its own** (``max_retries=0``, ``retry_on_timeout=False``): the sink's one retry layer decides,
  from :attr:`WriteError.retriable` (429, 5xx and no connection: retriable; any other answer: permanent).
- **Fast path**: ``_bulk`` bodies are sent as the NDJSON bytes the sink built, untouched; answers are parsed with
  orjson.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from opensearchpy import OpenSearch, Urllib3HttpConnection
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import ImproperlyConfigured, SerializationError, TransportError
from opensearchpy.serializer import JSONSerializer

from core.config import CommonConfig
from sinks.errors import WriteError

__all__ = ["BulkClient", "http_auth"]

BULK_FILTER = "errors,items.*.status,items.*.error"
_NDJSON = {"content-type": "application/x-ndjson"}


class _Serializer(JSONSerializer):
    """opensearch-py's JSON serializer, reading answers with orjson; bodies arrive as bytes and pass as they are."""

    def loads(self, s: str) -> Any:
        return orjson.loads(s)


def http_auth(cfg: CommonConfig) -> Any:
    """What opensearch-py's ``http_auth`` gets: a SigV4 signer when ``opensearch_aws_region`` is set, else
    ``(user, password)`` when a user is set, else ``None``. The SigV4 settings are the sinks' (``SinkConfig``);
    a config without them (a tool's ``CommonConfig``) uses basic auth."""
    region = getattr(cfg, "opensearch_aws_region", "")
    if region:
        import boto3
        from opensearchpy import Urllib3AWSV4SignerAuth

        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise WriteError("INFERLOG_OPENSEARCH_AWS_REGION is set but boto3 finds no AWS credentials")
        return Urllib3AWSV4SignerAuth(credentials, region, getattr(cfg, "opensearch_aws_service", "es"))
    if cfg.opensearch_user:
        return (cfg.opensearch_user, cfg.opensearch_password)
    return None


class BulkClient:
    """The sink's client: :meth:`call` for one request, :meth:`bulk` for one ``_bulk`` body, :meth:`close`."""

    def __init__(self, cfg: CommonConfig, *, timeout_s: float = 60.0) -> None:
        self.url = cfg.opensearch_url.rstrip("/")
        self.client = OpenSearch(
            hosts=[self.url],
            http_auth=http_auth(cfg),
            connection_class=Urllib3HttpConnection,
            serializer=_Serializer(),
            max_retries=0,
            retry_on_timeout=False,
            timeout=timeout_s,
            maxsize=4,
        )

    def call(self, method: str, path: str, body: bytes | None = None, *, ndjson: bool = False) -> Any:
        """One request (``path`` may carry a query string); 429/5xx and connection trouble raise a retriable
        :class:`WriteError`, any other non-2xx a permanent one."""
        split = urlsplit(path)
        params = dict(parse_qsl(split.query)) if split.query else None
        return self._request(method, split.path, params, body, _NDJSON if ndjson else None)

    def bulk(self, body: bytes) -> Any:
        """``POST _bulk`` of the pre-serialised NDJSON ``body``; the answer keeps errors and item statuses only."""
        return self._request("POST", "/_bulk", {"filter_path": BULK_FILTER}, body, _NDJSON)

    def _request(
        self, method: str, path: str, params: dict[str, str] | None, body: bytes | None, headers: dict[str, str] | None
    ) -> Any:
        try:
            return self.client.transport.perform_request(method, path, params=params, body=body, headers=headers)
        except OSConnectionError as exc:  # no answer: refused, reset, timed out, TLS
            raise WriteError(f"OpenSearch {self.url} unreachable: {exc.info or exc}", retriable=True) from exc
        except TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else 0
            detail = exc.info if isinstance(exc.info, str) else orjson.dumps(exc.info, default=str).decode()
            raise WriteError(
                f"OpenSearch {method} {path}: HTTP {status}: {detail[:500]}",
                retriable=status == 429 or status >= 500,
            ) from exc
        except (SerializationError, ImproperlyConfigured) as exc:
            raise WriteError(f"OpenSearch {method} {path}: {exc}") from exc

    def close(self) -> None:
        self.client.close()
