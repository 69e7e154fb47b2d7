"""Realistic KServe payload-logger traffic, so a newcomer sees the pipeline move.

Each simulated inference is what KServe's agent sends (KSERVE-LOGGER.md §2-4): a request event and, unless
the model "failed", a response event with the same ``Ce-Id``, ``Ce-Source: http://localhost:9081/``, an empty
``Ce-Endpoint``, ``Ce-Metadata`` with the allow-listed headers, ``Ce-Annotations``, ``Ce-Time`` and
``Ce-Recordedtime``, the request's Content-Type on both events; v1 (``instances``/``predictions``) and v2/OIP
(``inputs``/``outputs``) bodies; some responses sent before their request and some never sent; and some
*retried* inferences: a first attempt that failed (a request event, no response: KServe logs none for a non-200
answer), then the same request again with the same ``Ce-Id`` (as Knative redelivers a CloudEvent) and its
response.

``Ce-Time`` is the time at which the event is scheduled to be sent, as KServe stamps it when it logs, so event
time moves with the wall clock. *Slow LLM calls* (``slow``) are streamed OpenAI chat completions whose answer
takes ``slow_latency_s`` (the response is sent that much later): half to ``chat-llama``, annotated
``inferlog.io/pair-timeout: 2m`` (one complete record), half to ``chat-mistral`` without the annotation: beyond
a shorter pair timeout (``make run`` sets 5 s) it first expires as ``request_only`` and is then corrected by its
response (a complete record of revision 2).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson

from core.events import REQUEST_TYPE, RESPONSE_TYPE

MODELS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("sklearn-iris", "v1", {"team": "ml-platform"}),
    ("fraud-xgb", "v2", {"team": "fraud", "serving.kserve.io/deploymentMode": "RawDeployment"}),
    ("churn-lgbm", "v2", {}),
    ("sentiment-bert", "v1", {"team": "nlp"}),
)
#: the slow LLM models: (isvc, annotations); the first one's annotation covers its slow answers
SLOW_MODELS: tuple[tuple[str, dict[str, str]], ...] = (
    ("chat-llama", {"team": "genai", "inferlog.io/pair-timeout": "2m"}),
    ("chat-mistral", {"team": "genai"}),
)
PROMPTS = (
    "Summarise the incident report of last night in three sentences.",
    "Write a haiku about feature stores.",
    "Explain the difference between precision and recall to a product manager.",
    "Draft a polite reply declining the meeting on Friday.",
)


@dataclass
class DemoSummary:
    inferences: int = 0
    events: int = 0
    accepted: int = 0
    failed: int = 0
    missing_responses: int = 0
    responses_first: int = 0
    retried: int = 0  # inferences whose first attempt failed (one extra request event with the same Ce-Id)
    slow: int = 0  # slow streamed LLM calls (half annotated with a pair timeout that covers them)
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("ids")
        out["events_per_s"] = round(self.events / self.seconds, 1) if self.seconds else 0.0
        return out


def _ce_time(t: datetime) -> str:
    # Go's RFC3339Nano with trailing zeros trimmed.
    text = t.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def inference_events(
    rng: random.Random,
    namespace: str,
    *,
    model: tuple[str, str, dict[str, str]] | None = None,
    at: datetime | None = None,
) -> list[tuple[dict[str, str], bytes]]:
    """The (headers, body) of the request and response events of one inference at ``at`` (default: now), in
    send order."""
    isvc, protocol, annotations = model or rng.choice(MODELS)
    ce_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    rows = rng.randint(1, 4)
    if protocol == "v1":
        request: dict[str, Any] = {"instances": [[round(rng.uniform(0, 8), 1) for _ in range(4)] for _ in range(rows)]}
        response: dict[str, Any] = {"predictions": [rng.randint(0, 2) for _ in range(rows)]}
    else:
        data = [round(rng.uniform(-3, 3), 3) for _ in range(rows * 8)]
        request = {"inputs": [{"name": "input-0", "shape": [rows, 8], "datatype": "FP32", "data": data}]}
        response = {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "model_name": isvc,
            "model_version": None,
            "outputs": [
                {"name": "output-0", "shape": [rows], "datatype": "FP32", "data": [rng.random() for _ in range(rows)]}
            ],
        }
    return _events(rng, ce_id, isvc, namespace, annotations, orjson.dumps(request), orjson.dumps(response), at)


def llm_events(
    rng: random.Random, namespace: str, isvc: str, annotations: dict[str, str], at: datetime, latency: timedelta
) -> list[tuple[dict[str, str], bytes]]:
    """A streamed OpenAI chat completion (``stream_options.include_usage``): the request and its SSE response."""
    ce_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    prompt = rng.choice(PROMPTS)
    request = {
        "model": isvc,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": prompt},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    words = rng.sample(["Sure", "here", "is", "a", "short", "answer", "that", "took", "a", "while"], k=8)
    chunks: list[dict[str, Any]] = []
    for i, word in enumerate(words):
        delta = {"content": ("" if i == 0 else " ") + word}
        finish = "stop" if i == len(words) - 1 else None
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        chunks.append({"id": ce_id[:8], "object": "chat.completion.chunk", "model": isvc, "choices": [choice]})
    prompt_tokens = 12 + len(prompt.split())
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(words),
        "total_tokens": prompt_tokens + len(words),
    }
    chunks.append({"id": ce_id[:8], "object": "chat.completion.chunk", "model": isvc, "choices": [], "usage": usage})
    sse = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    return _events(rng, ce_id, isvc, namespace, annotations, orjson.dumps(request), sse, at, latency)


def _events(
    rng: random.Random,
    ce_id: str,
    isvc: str,
    namespace: str,
    annotations: dict[str, str],
    request: bytes,
    response: bytes,
    at: datetime | None,
    latency: timedelta | None = None,
) -> list[tuple[dict[str, str], bytes]]:
    now = at or datetime.now(UTC)
    latency = latency or timedelta(milliseconds=rng.uniform(2, 40))
    base = {
        "Ce-Specversion": "1.0",
        "Ce-Id": ce_id,
        "Ce-Source": "http://localhost:9081/",
        "Ce-Inferenceservicename": isvc,
        "Ce-Namespace": namespace,
        "Ce-Component": "predictor",
        "Ce-Endpoint": "",
        "Ce-Metadata": orjson.dumps({"X-Request-Id": [f"r-{ce_id[:8]}"]}, option=orjson.OPT_SORT_KEYS).decode(),
        "Content-Type": "application/json",
    }
    if annotations:
        base["Ce-Annotations"] = orjson.dumps(annotations, option=orjson.OPT_SORT_KEYS).decode()
    req = dict(base, **{"Ce-Type": REQUEST_TYPE, "Ce-Time": _ce_time(now), "Ce-Recordedtime": _ce_time(now)})
    resp = dict(
        base,
        **{
            "Ce-Type": RESPONSE_TYPE,
            "Ce-Time": _ce_time(now + latency),
            "Ce-Recordedtime": _ce_time(now + latency + timedelta(microseconds=300)),
        },
    )
    return [(req, request), (resp, response)]


def _failed_attempt(request: tuple[dict[str, str], bytes], backoff: timedelta) -> tuple[dict[str, str], bytes]:
    """The request event of an earlier attempt of the same call (same ``Ce-Id`` and body), ``backoff`` before."""
    headers, body = request
    earlier = _ce_time(datetime.fromisoformat(headers["Ce-Time"]) - backoff)
    return dict(headers, **{"Ce-Time": earlier, "Ce-Recordedtime": earlier}), body


async def send_demo(
    url: str,
    count: int,
    rate: float,
    *,
    namespace: str = "demo",
    missing_response: float = 0.05,
    response_first: float = 0.2,
    retried: float = 0.03,
    concurrency: int = 16,
    token: str | None = None,
    seed: int | None = None,
    progress: bool = True,
    timeout_s: float = 30.0,
    slow: int = 0,
    slow_latency_s: float = 8.0,
) -> DemoSummary:
    """Simulate ``count`` inferences at ``rate`` events/s against the ingest at ``url``, plus ``slow`` slow LLM
    calls answered after ``slow_latency_s``; returns a summary (with the ``Ce-Id`` of every accepted event in
    ``ids``)."""
    rng = random.Random(seed)
    summary = DemoSummary(inferences=count + slow, slow=slow)
    t0 = datetime.now(UTC)
    timed: list[tuple[float, dict[str, str], bytes]] = []  # (send at, seconds from the start; headers; body)

    def offset() -> float:
        return len(timed) / rate if rate > 0 else 0.0

    for _ in range(count):
        at = offset()
        events = inference_events(rng, namespace, at=t0 + timedelta(seconds=at))
        if rng.random() < missing_response:
            events = events[:1]
            summary.missing_responses += 1
        elif rng.random() < response_first:
            events.reverse()
            summary.responses_first += 1
        elif rng.random() < retried:
            timed.append((at, *_failed_attempt(events[0], timedelta(milliseconds=rng.uniform(100, 1000)))))
            summary.retried += 1
        for headers, body in events:
            timed.append((offset(), headers, body))
    regular_s = offset()
    latency = timedelta(seconds=slow_latency_s)
    for i in range(slow):  # spread over the first half of the regular traffic, answered slow_latency_s later
        isvc, annotations = SLOW_MODELS[i % len(SLOW_MODELS)]
        at = regular_s / 2 * i / slow
        req, resp = llm_events(rng, namespace, isvc, annotations, t0 + timedelta(seconds=at), latency)
        timed += [(at, *req), (at + slow_latency_s, *resp)]
    timed.sort(key=lambda item: item[0])  # stable: equal times keep the order above
    plan = [(h, b) for _, h, b in timed]
    summary.events = len(plan)
    queue: asyncio.Queue[tuple[dict[str, str], bytes] | None] = asyncio.Queue(maxsize=concurrency * 2)
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan), unit="ev", desc=f"demo → {url}")
    started = time.monotonic()

    async def worker(session: aiohttp.ClientSession) -> None:
        while (item := await queue.get()) is not None:
            headers, body = item
            if token:
                headers = dict(headers, Authorization=f"Bearer {token}")
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = str(resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            summary.statuses[status] = summary.statuses.get(status, 0) + 1
            if status.startswith("2"):
                summary.accepted += 1
                summary.ids.append(headers["Ce-Id"])
            else:
                summary.failed += 1
            if bar is not None:
                bar.update(1)

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        for send_at, headers, body in timed:
            delay = started + send_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the traffic's own pacing
            await queue.put((headers, body))
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    summary.seconds = round(time.monotonic() - started, 3)
    if bar is not None:
        bar.close()
    return summary
