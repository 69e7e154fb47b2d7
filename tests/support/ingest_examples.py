"""The wire examples of KSERVE-LOGGER.md §3 (and the legacy, structured and batch forms), each with the Kafka
record the ingest must produce for it. Contract tests replay them; ``inferlog demo`` follows the same shapes."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import orjson

from core.events import REQUEST_TYPE, RESPONSE_TYPE


@dataclass(frozen=True)
class Expected:
    key: str
    headers: dict[str, str]
    value: bytes


@dataclass(frozen=True)
class Example:
    name: str
    method: str
    headers: list[tuple[str, str]]
    body: bytes
    expected: list[Expected] = field(default_factory=list)


_A_REQ_BODY = b'{"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}'
_A_RESP_BODY = b'{"predictions": [1, 1]}'
_A_ID = "5011cc37-0749-4899-8422-f7ac39898cee"
_A_COMMON = [
    ("User-Agent", "Go-http-client/1.1"),
    ("Ce-Annotations", '{"team":"fraud"}'),
    ("Ce-Component", "predictor"),
    ("Ce-Endpoint", ""),
    ("Ce-Id", _A_ID),
    ("Ce-Inferenceservicename", "sklearn-iris"),
    ("Ce-Metadata", '{"X-Request-Id":["r-42"]}'),
    ("Ce-Namespace", "default"),
    ("Ce-Source", "http://localhost:9081/"),
    ("Ce-Specversion", "1.0"),
    ("Content-Type", "application/json"),
    ("Accept-Encoding", "gzip"),
]
_A_HEADERS = {
    "ce_specversion": "1.0",
    "ce_id": _A_ID,
    "ce_source": "http://localhost:9081/",
    "ce_inferenceservicename": "sklearn-iris",
    "ce_namespace": "default",
    "ce_component": "predictor",
    "ce_endpoint": "",
    "ce_metadata": '{"X-Request-Id":["r-42"]}',
    "ce_annotations": '{"team":"fraud"}',
    "content-type": "application/json",
}
_A_KEY = f"default/sklearn-iris/predictor/{_A_ID}"

A_REQUEST = Example(
    "A-v1-request",
    "POST",
    [
        *_A_COMMON,
        ("Ce-Recordedtime", "2026-03-10T09:14:03.8150021Z"),
        ("Ce-Time", "2026-03-10T09:14:03.811983Z"),
        ("Ce-Type", REQUEST_TYPE),
    ],
    _A_REQ_BODY,
    [
        Expected(
            _A_KEY,
            {
                **_A_HEADERS,
                "ce_type": REQUEST_TYPE,
                "ce_time": "2026-03-10T09:14:03.811983Z",
                "ce_recordedtime": "2026-03-10T09:14:03.8150021Z",
            },
            _A_REQ_BODY,
        )
    ],
)
A_RESPONSE = Example(
    "A-v1-response",
    "POST",
    [
        *_A_COMMON,
        ("Ce-Recordedtime", "2026-03-10T09:14:03.8402Z"),
        ("Ce-Time", "2026-03-10T09:14:03.8391Z"),
        ("Ce-Type", RESPONSE_TYPE),
    ],
    _A_RESP_BODY,
    [
        Expected(
            _A_KEY,
            {
                **_A_HEADERS,
                "ce_type": RESPONSE_TYPE,
                "ce_time": "2026-03-10T09:14:03.8391Z",
                "ce_recordedtime": "2026-03-10T09:14:03.8402Z",
            },
            _A_RESP_BODY,
        )
    ],
)

_B_ID = "0009174a-24a8-4603-b098-09c8799950e9"
_B_REQ = b'{"inputs":[{"name":"input-0","shape":[2,4],"datatype":"FP32","data":[6.8,2.8,4.8,1.4,6.0,3.4,4.5,1.6]}]}'
_B_RESP = (
    b'{"id":"823248cc-d770-4a51-9606-16803395569c","model_name":"sklearn-iris","model_version":null,'
    b'"outputs":[{"name":"output-0","shape":[2],"datatype":"INT64","data":[1,1]}]}'
)


def _b(ce_type: str, body: bytes, time: str) -> Example:
    headers = [
        ("Ce-Component", "predictor"),
        ("Ce-Endpoint", ""),
        ("Ce-Id", _B_ID),
        ("Ce-Inferenceservicename", "sklearn-iris"),
        ("Ce-Metadata", "{}"),
        ("Ce-Namespace", "default"),
        ("Ce-Recordedtime", time),
        ("Ce-Source", "http://localhost:9081/"),
        ("Ce-Specversion", "1.0"),
        ("Ce-Time", time),
        ("Ce-Type", ce_type),
        ("Content-Type", "application/json"),
    ]
    expected = {
        "ce_specversion": "1.0",
        "ce_id": _B_ID,
        "ce_source": "http://localhost:9081/",
        "ce_type": ce_type,
        "ce_time": time,
        "ce_recordedtime": time,
        "ce_inferenceservicename": "sklearn-iris",
        "ce_namespace": "default",
        "ce_component": "predictor",
        "ce_endpoint": "",
        "ce_metadata": "{}",
        "content-type": "application/json",
    }
    name = "B-v2-request" if ce_type == REQUEST_TYPE else "B-v2-response"
    return Example(name, "POST", headers, body, [Expected(f"default/sklearn-iris/predictor/{_B_ID}", expected, body)])


B_REQUEST = _b(REQUEST_TYPE, _B_REQ, "2026-03-10T09:14:04Z")
B_RESPONSE = _b(RESPONSE_TYPE, _B_RESP, "2026-03-10T09:14:04.1Z")

# D: GET /v2/health/ready through the agent: empty body, no Content-Type, lower-case header spellings.
D_EMPTY = Example(
    "D-empty-get",
    "POST",
    [
        ("ce-specversion", "1.0"),
        ("ce-id", "d1"),
        ("ce-source", "http://localhost:9081/"),
        ("ce-type", REQUEST_TYPE),
        ("ce-namespace", "ml"),
        ("ce-inferenceservicename", "m"),
        ("ce-component", "transformer"),
        ("ce-endpoint", ""),
        ("ce-metadata", "{}"),
        ("ce-time", "2026-03-10T09:14:05.000000001Z"),
        ("Content-Length", "0"),
    ],
    b"",
    [
        Expected(
            "ml/m/transformer/d1",
            {
                "ce_specversion": "1.0",
                "ce_id": "d1",
                "ce_source": "http://localhost:9081/",
                "ce_type": REQUEST_TYPE,
                "ce_namespace": "ml",
                "ce_inferenceservicename": "m",
                "ce_component": "transformer",
                "ce_endpoint": "",
                "ce_metadata": "{}",
                "ce_time": "2026-03-10T09:14:05.000000001Z",
            },
            b"",
        )
    ],
)

# E: the caller sent its own Ce-Id (ids may contain anything, '/' included); unknown extensions are kept.
E_CALLER_ID = Example(
    "E-caller-id-and-extensions",
    "POST",
    [
        ("Ce-Specversion", "1.0"),
        ("Ce-Id", "abc/1"),
        ("Ce-Source", "http://localhost:9081/"),
        ("Ce-Type", RESPONSE_TYPE),
        ("Ce-Namespace", "default"),
        ("Ce-Inferenceservicename", "sklearn-iris"),
        ("Ce-Component", "predictor"),
        ("Ce-Endpoint", ""),
        ("Ce-Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("Ce-Knativearrivaltime", "2026-03-10T09:14:06.5Z"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ],
    b'{"predictions": [0]}',
    [
        Expected(
            "default/sklearn-iris/predictor/abc/1",
            {
                "ce_specversion": "1.0",
                "ce_id": "abc/1",
                "ce_source": "http://localhost:9081/",
                "ce_type": RESPONSE_TYPE,
                "ce_namespace": "default",
                "ce_inferenceservicename": "sklearn-iris",
                "ce_component": "predictor",
                "ce_endpoint": "",
                "ce_traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "ce_knativearrivaltime": "2026-03-10T09:14:06.5Z",
                "content-type": "application/x-www-form-urlencoded",
            },
            b'{"predictions": [0]}',
        )
    ],
)

# Legacy kfserving (spec 0.2, sdk-go v1): JSON-quoted extension values, stored as CloudEvents 1.0.
LEGACY_02 = Example(
    "legacy-0.2-quoted-extensions",
    "POST",
    [
        ("Ce-Specversion", "0.2"),
        ("Ce-Id", "legacy-1"),
        ("Ce-Source", "http://localhost:8080/"),
        ("Ce-Type", REQUEST_TYPE),
        ("Ce-Time", "2020-03-10T09:14:03.811983Z"),
        ("Ce-Namespace", '"default"'),
        ("Ce-Inferenceservicename", '"sklearn-iris"'),
        ("Ce-Endpoint", '"default"'),
        ("Model-Id", "sklearn-iris"),
        ("Content-Type", "application/json"),
    ],
    _A_REQ_BODY,
    [
        Expected(
            "default/sklearn-iris//legacy-1",
            {
                "ce_specversion": "1.0",
                "ce_id": "legacy-1",
                "ce_source": "http://localhost:8080/",
                "ce_type": REQUEST_TYPE,
                "ce_time": "2020-03-10T09:14:03.811983Z",
                "ce_namespace": "default",
                "ce_inferenceservicename": "sklearn-iris",
                "ce_component": "",
                "ce_endpoint": "default",
                "content-type": "application/json",
            },
            _A_REQ_BODY,
        )
    ],
)

_S_DOC = {
    "specversion": "1.0",
    "id": "s-1",
    "source": "http://localhost:9081/",
    "type": REQUEST_TYPE,
    "time": "2026-03-10T09:14:03Z",
    "namespace": "default",
    "inferenceservicename": "sklearn-iris",
    "component": "predictor",
    "endpoint": "",
    "knativearrivaltime": "2026-03-10T09:14:03.5Z",
    "datacontenttype": "application/json",
    "data": {"instances": [[1, 2]]},
}
_S_HEADERS = {
    "ce_specversion": "1.0",
    "ce_id": "s-1",
    "ce_source": "http://localhost:9081/",
    "ce_type": REQUEST_TYPE,
    "ce_time": "2026-03-10T09:14:03Z",
    "ce_namespace": "default",
    "ce_inferenceservicename": "sklearn-iris",
    "ce_component": "predictor",
    "ce_endpoint": "",
    "ce_knativearrivaltime": "2026-03-10T09:14:03.5Z",
    "content-type": "application/json",
}
STRUCTURED = Example(
    "structured-json",
    "POST",
    [("Content-Type", "application/cloudevents+json; charset=utf-8")],
    orjson.dumps(_S_DOC),
    [Expected("default/sklearn-iris/predictor/s-1", _S_HEADERS, b'{"instances":[[1,2]]}')],
)

_BIN = b"\x00\x01\xffbinary-tensor"
_BATCH_DOCS = [
    _S_DOC,
    {
        **{k: v for k, v in _S_DOC.items() if k not in ("data", "datacontenttype", "knativearrivaltime")},
        "id": "s-2",
        "type": RESPONSE_TYPE,
        "datacontenttype": "application/octet-stream",
        "data_base64": base64.b64encode(_BIN).decode(),
    },
]
BATCH = Example(
    "batch-json",
    "POST",
    [("Content-Type", "application/cloudevents-batch+json")],
    orjson.dumps(_BATCH_DOCS),
    [
        Expected("default/sklearn-iris/predictor/s-1", _S_HEADERS, b'{"instances":[[1,2]]}'),
        Expected(
            "default/sklearn-iris/predictor/s-2",
            {
                **{k: v for k, v in _S_HEADERS.items() if k != "ce_knativearrivaltime"},
                "ce_id": "s-2",
                "ce_type": RESPONSE_TYPE,
                "content-type": "application/octet-stream",
            },
            _BIN,
        ),
    ],
)

ALL = [A_REQUEST, A_RESPONSE, B_REQUEST, B_RESPONSE, D_EMPTY, E_CALLER_ID, LEGACY_02, STRUCTURED, BATCH]
