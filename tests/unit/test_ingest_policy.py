"""Sampling keeps request and response together; redaction hides configured fields and headers; tokens are
scoped to a namespace."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from core.events import REQUEST_TYPE, RESPONSE_TYPE, LoggedEvent
from ingest.config import IngestConfig
from ingest.errors import Forbidden, Unauthorized
from ingest.policy import REDACTED, Auth, Credentials, Policy, Redactor, Sampler, spiffe_namespace


def ev(i: int, type_: str = REQUEST_TYPE, ns: str = "ns", isvc: str = "m", data: bytes = b"") -> LoggedEvent:
    return LoggedEvent(id=f"id-{i}", source="s", type=type_, namespace=ns, isvc=isvc, component="predictor", data=data)


def test_sampling_keeps_both_sides_together_at_the_configured_rate() -> None:
    sampler = Sampler({"ns/m": 0.25, "ns": 0.0, "*": 1.0})
    kept = [i for i in range(4000) if sampler.keep(ev(i))]
    assert all(sampler.keep(ev(i, RESPONSE_TYPE)) for i in kept)
    assert not any(sampler.keep(ev(i, RESPONSE_TYPE)) for i in set(range(4000)) - set(kept))
    assert 0.22 < len(kept) / 4000 < 0.28
    assert not sampler.keep(ev(1, isvc="other"))  # namespace rate 0
    assert sampler.keep(ev(1, ns="else"))  # '*' rate 1


def test_redaction_of_body_fields_and_headers() -> None:
    body = orjson.dumps(
        {"inputs": [{"name": "a", "data": [1, 2]}, {"name": "b", "data": [3]}], "user": {"ssn": "x", "n": 1}}
    )
    event = dataclasses.replace(
        ev(1, data=body),
        metadata='{"Authorization":["Bearer x"],"X-Request-Id":["r"]}',
        annotations='{"team":"t","secret":"s"}',
        extensions={"secret": "s", "traceparent": "t"},
    )
    out = Redactor(["inputs.data", "**.ssn"], ["authorization", "Secret"]).apply(event)
    doc = orjson.loads(out.data)
    assert [i["data"] for i in doc["inputs"]] == [REDACTED, REDACTED]
    assert doc["user"] == {"ssn": REDACTED, "n": 1}
    assert orjson.loads(out.metadata or "") == {"Authorization": [REDACTED], "X-Request-Id": ["r"]}
    assert orjson.loads(out.annotations or "") == {"secret": REDACTED, "team": "t"}
    assert out.extensions == {"secret": REDACTED, "traceparent": "t"}


def test_redaction_leaves_non_matching_bodies_byte_for_byte() -> None:
    raw = b'{"instances": [[1,  2]]}'
    assert Redactor(["password"], []).apply(ev(1, data=raw)).data == raw
    assert Redactor(["password"], []).apply(ev(1, data=b"\x00{bin")).data == b"\x00{bin"


def bearer(token: str | None) -> Credentials:
    return Credentials.of({"Authorization": f"Bearer {token}"} if token else {}, "/", {})


def test_tokens_are_scoped_to_their_namespace() -> None:
    auth = Auth({"tok-a": "a", "tok-admin": "*"})
    auth.check(bearer("tok-a"), [ev(1, ns="a")])
    auth.check(bearer("tok-admin"), [ev(1, ns="b")])
    with pytest.raises(Forbidden):
        auth.check(bearer("tok-a"), [ev(1, ns="a"), ev(2, ns="b")])
    with pytest.raises(Unauthorized):
        auth.check(bearer(None), [ev(1, ns="a")])
    with pytest.raises(Unauthorized):
        auth.check(bearer("nope"), [ev(1, ns="a")])
    Auth({}).check(bearer(None), [ev(1)])  # disabled


def test_the_token_travels_in_the_logger_url_as_a_path_segment_or_a_query_parameter() -> None:
    auth = Auth({"s3cr%t": "a"})
    assert Credentials.of({}, "/token/s3cr%25t", {}).token == "s3cr%t"  # percent-encoded in the URL
    assert Credentials.of({}, "/token/s3cr%25t/more/path", {}).token == "s3cr%t"
    assert Credentials.of({}, "/", {"token": "s3cr%t"}).token == "s3cr%t"
    auth.check(Credentials.of({}, "/token/s3cr%25t", {}), [ev(1, ns="a")])
    with pytest.raises(Forbidden):
        auth.check(Credentials.of({}, "/", {"token": "s3cr%t"}), [ev(1, ns="b")])
    with pytest.raises(Unauthorized):
        auth.check(Credentials.of({}, "/token/", {}), [ev(1, ns="a")])
    with pytest.raises(Unauthorized):
        auth.check(Credentials.of({}, "/tokens/s3cr%25t", {}), [ev(1, ns="a")])
    assert "s3cr" not in repr(Credentials.of({}, "/token/s3cr%25t", {})) and "s3cr" not in repr(auth)


XFCC = (
    'By=spiffe://cluster.local/ns/inferlog/sa/ingest;Hash=4f2a;Subject="";'
    "URI=spiffe://cluster.local/ns/team-a/sa/sklearn-iris-predictor"
)


def test_a_trusted_mesh_identity_binds_its_namespace() -> None:
    auth = Auth({}, "cluster.local")
    mesh = Credentials.of({"X-Forwarded-Client-Cert": XFCC}, "/", {})
    auth.check(mesh, [ev(1, ns="team-a")])
    with pytest.raises(Forbidden):
        auth.check(mesh, [ev(1, ns="team-b")])
    with pytest.raises(Unauthorized):  # another trust domain
        Auth({}, "example.org").check(mesh, [ev(1, ns="team-a")])
    with pytest.raises(Unauthorized):  # not trusted unless configured: the header alone means nothing
        Auth({"t": "x"}).check(mesh, [ev(1, ns="team-a")])
    # the element the nearest proxy appended is the one that counts
    forged = "URI=spiffe://cluster.local/ns/team-b/sa/x," + XFCC
    auth.check(Credentials.of({"X-Forwarded-Client-Cert": forged}, "/", {}), [ev(1, ns="team-a")])
    assert spiffe_namespace("URI=spiffe://cluster.local/ns/team-a", "cluster.local") is None  # no service account


def test_policy_from_config() -> None:
    cfg = IngestConfig(sampling="ns/m=0.5", redact_fields="a.b", redact_headers="X-User", auth_tokens="ns=t")
    cfg.validate()
    p = Policy.from_config(cfg)
    assert p.sampler.rate("ns", "m") == 0.5 and p.auth.enabled and p.redactor.enabled
