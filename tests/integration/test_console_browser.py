"""The web console in a real headless Chromium (Debian's), over a whole pipeline on the real stack with demo
traffic: the overview's counts equal the reconciliation, filtering a model's records to request_only shows
exactly its failed ones, a record page shows both bodies, and a payload carrying ``<script>`` is shown as text
and never runs. Screenshots go to ``$TEST_ARTIFACTS`` (default ``test-artifacts/``)."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from inferlog.console.queries import PAGE_SIZE
from tests.support.pipeline import Pipeline, wait_processed

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
XSS_REQUEST = {"instances": [["<script>window.__pwned = 1</script>", '<img src=x onerror="window.__pwned = 2">']]}
XSS_RESPONSE = {"predictions": ["</pre><script>window.__pwned = 3</script>"]}


async def _send_xss(url: str) -> str:
    """One inference whose bodies carry markup (as KServe would log any caller's payload); returns its id."""
    from ingest.demo import inference_events

    events = inference_events(random.Random(5), "demo", model=("xss-model", "v1", {}))
    bodies = [orjson.dumps(XSS_REQUEST), orjson.dumps(XSS_RESPONSE)]
    async with aiohttp.ClientSession() as session:
        for (headers, _), body in zip(events, bodies, strict=True):
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status == 202
    return f"demo/xss-model/predictor/{events[0][0]['Ce-Id']}"


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (make test installs Debian's chromium with apt)")
def test_the_console_shows_what_the_reconciliation_counts_and_never_runs_a_payload(pipeline: Pipeline) -> None:
    from playwright.sync_api import Dialog, sync_playwright

    from ingest.demo import send_demo

    since_ms = int(time.time() * 1000) - 1000
    summary = asyncio.run(send_demo(pipeline.url, 150, 500.0, progress=False, seed=11, missing_response=0.15))
    xss_id = asyncio.run(_send_xss(pipeline.url))
    rec = wait_processed(pipeline, since_ms, summary.events + 2)
    assert rec.balanced
    expected = {f"{ns}/{isvc}": c.records for (ns, isvc), c in rec.models.items()}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    url = pipeline.console_url  # the console inferlog run started, as make run does
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        dialogs: list[str] = []

        def dialog(d: Dialog) -> None:  # an alert() from a payload would land here
            dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)
        try:
            # the overview: one row per model, with the reconciliation's record counts
            page.goto(f"{url}/?range=1h")
            page.wait_for_function("document.querySelectorAll('[data-chart]:not([data-drawn])').length === 0")
            shown = {
                row.get_attribute("data-model"): int(row.locator("td.records").inner_text())
                for row in page.locator("#models tbody tr").all()
            }
            assert shown == expected
            page.screenshot(path=str(ARTIFACTS / "console-overview.png"), full_page=True)

            # one model, its records filtered to request_only: exactly its failed requests
            name, counts = max(rec.models.items(), key=lambda kv: kv[1].request_only)
            page.click(f"#models a:text-is('{name[0]}/{name[1]}')")
            page.wait_for_selector("#records")
            page.select_option("#status", "request_only")
            page.click("#apply")
            page.wait_for_url("**status=request_only**")
            statuses = page.locator("#records tbody tr").evaluate_all("rows => rows.map(r => r.dataset.status)")
            assert statuses == ["request_only"] * min(PAGE_SIZE, counts.request_only)
            assert page.locator("#total").inner_text() == f"{counts.request_only} found"
            page.screenshot(path=str(ARTIFACTS / "console-model-failed.png"), full_page=True)

            # a complete record: both bodies side by side
            page.select_option("#status", "complete")
            page.click("#apply")
            page.wait_for_url("**status=complete**")
            page.locator("#records a.record-link").first.click()
            page.wait_for_selector("#record-status")
            assert page.locator("#record-status").inner_text() == "complete"
            request = orjson.loads(page.locator("#request pre.payload").inner_text())  # pretty JSON, as sent
            response = orjson.loads(page.locator("#response pre.payload").inner_text())
            assert set(request) & {"instances", "inputs"} and set(response) & {"predictions", "outputs"}
            assert "inferlog replay" in page.locator("#replay-1").inner_text()

            # markup in a payload is text: shown as it was sent, and nothing of it runs
            page.goto(f"{url}/record?id={quote(xss_id, safe='')}")
            page.wait_for_selector("#request pre.payload")
            assert "<script>window.__pwned = 1</script>" in page.locator("#request pre.payload").inner_text()
            assert "</pre><script>window.__pwned = 3</script>" in page.locator("#response pre.payload").inner_text()
            assert page.evaluate("typeof window.__pwned") == "undefined" and dialogs == []
            assert page.locator("script:not([src]):not([type='application/json'])").count() == 0
            page.screenshot(path=str(ARTIFACTS / "console-record-markup.png"), full_page=True)

            # the reconciliation page: today's inferlog stats, balanced
            page.goto(f"{url}/reconciliation")
            assert page.locator("#verdict").inner_text().startswith("BALANCED")
            assert page.locator("#reconciliation tr.unbalanced").count() == 0
            assert page.locator("#reconciliation tbody tr").count() == len(expected)
            page.screenshot(path=str(ARTIFACTS / "console-reconciliation.png"), full_page=True)
        finally:
            browser.close()
