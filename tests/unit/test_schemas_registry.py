"""The registry client: confluent-kafka's SchemaRegistryClient underneath, credentials passed through, no
retries of its own, and its failures classified retriable or permanent."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryError

from schemas.serde import AvroSerde, RegistryClient, SchemaError


def test_credentials_become_basic_auth_and_the_client_does_not_retry() -> None:
    client = RegistryClient("https://registry.example/apis/ccompat/v7", auth="key:se:cret")
    rest = client.client._rest_client
    assert rest.auth == ("key", "se:cret")
    assert rest.max_retries == 0
    assert RegistryClient("http://unused").client._rest_client.auth is None


def test_for_topic_passes_the_credentials_through() -> None:
    serde = AvroSerde.for_topic("http://unused", "t", "failure_signal", registry_auth="u:p")
    assert serde.registry.client._rest_client.auth == ("u", "p")
    assert serde.subject == "t-value"


def test_malformed_credentials_are_a_clear_permanent_error() -> None:
    with pytest.raises(SchemaError, match="user:password") as info:
        RegistryClient("http://unused", auth="no-colon")
    assert not info.value.retriable


@pytest.mark.parametrize(("status", "retriable"), [(401, False), (404, False), (409, False), (429, True), (503, True)])
def test_http_errors_are_classified(status: int, retriable: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    client = RegistryClient("http://unused")

    def fail(*_: Any, **__: Any) -> Any:
        raise SchemaRegistryError(status, -1, "nope")

    monkeypatch.setattr(client.client, "get_schema", fail)
    with pytest.raises(SchemaError, match=f"HTTP {status}") as info:
        client.schema_by_id(7)
    assert info.value.retriable is retriable
    if status == 401:
        assert "INFERLOG_REGISTRY_AUTH" in str(info.value)


def test_no_connection_is_retriable() -> None:
    with pytest.raises(SchemaError, match="unreachable") as info:
        RegistryClient("http://127.0.0.1:1", timeout_s=2).schema_by_id(1)
    assert info.value.retriable
