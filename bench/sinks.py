"""Throughput of the sinks next to their ceilings, measured in the same run on the local stack.

- S3: the sink (consume, decode, flatten, Parquet, upload, commit) against putting the *same object bytes*
  it wrote with a bare boto3 client, one object after another as the sink does per partition.
- OpenSearch: the sink (consume, decode, build documents, bulk, commit) against POSTing the same
  pre-serialized ``_bulk`` bodies with a bare urllib3 client to fresh indices with the same template.

Sink time runs from the first record consumed to the last successful write (group join excluded).
Prints records/s and the ratio sink/ceiling. Needs the local stack (``inferlog stack start``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import urllib3

from inferlog.config import load
from inferlog.retry import wait_until
from inferlog.stack.manager import StackConfig
from sinks.config import SinkConfig
from sinks.framework import Batch, Item, Sink, SinkRunner, run_until
from sinks.opensearch import OpenSearchSink, chunks, index_templates, prepare
from sinks.s3 import S3Sink, make_client
from tests.sinks_support import (
    T0_US,
    create_topics,
    group_caught_up,
    make_record,
    produce,
    produce_ticks,
    sink_config,
)


def run_sink(cfg: SinkConfig, sink: Sink) -> float:
    """Run ``sink`` until its group caught up; return the records/s it wrote."""
    runner = SinkRunner(cfg, sink)
    stop, errors = threading.Event(), []
    thread = run_until(runner, stop, errors.append)
    wait_until(
        lambda: bool(errors) or group_caught_up(cfg, runner.group, cfg.topics()), timeout_s=600, what="caught up"
    )
    stop.set()
    thread.join(60)
    if errors:
        raise errors[0]
    st = runner.stats
    return st.written / (st.last_write_at - st.first_record_at)


def bench_s3(cfg: SinkConfig, n: int) -> tuple[float, float]:
    s3 = make_client(cfg)
    s3.create_bucket(Bucket=cfg.s3_bucket)
    sink_rate = run_sink(cfg, S3Sink(cfg))
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cfg.s3_bucket, Prefix="bench/")
        for o in page.get("Contents", [])
    ]
    blobs = [s3.get_object(Bucket=cfg.s3_bucket, Key=k)["Body"].read() for k in keys]
    started = time.monotonic()
    for key, blob in zip(keys, blobs, strict=True):
        s3.put_object(Bucket=cfg.s3_bucket, Key="ceiling/" + key, Body=blob)
    ceiling = n / (time.monotonic() - started)
    print(f"  s3: {len(keys)} objects, {sum(map(len, blobs)) / 1e6:.1f} MB")
    return sink_rate, ceiling


def bench_opensearch(cfg: SinkConfig, n: int, recs: list[dict]) -> tuple[float, float]:
    import datetime as dt

    sink_rate = run_sink(cfg, OpenSearchSink(cfg))
    # the same documents, pre-serialized into bodies of bulk_bytes, for a fresh prefix with the same template
    ceiling_cfg = dataclasses.replace(cfg, index_prefix=cfg.index_prefix + "-ceiling")
    http = urllib3.PoolManager(retries=False)
    for name, body in index_templates(ceiling_cfg).items():
        http.request("PUT", f"{cfg.opensearch_url}/_index_template/{name}", body=orjson.dumps(body),
                     headers={"Content-Type": "application/json"})  # fmt: skip
    batch = Batch(cfg.topic_records, 0, "inference_record")
    for i, r in enumerate(recs):
        dec = dict(r, event_time=dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=r["event_time"]))
        batch.add(Item(i, None, b"", [], record=dec), None)
    bodies = [b"".join(p.lines for p in c) for c in chunks(prepare(ceiling_cfg, batch), cfg.bulk_bytes)]
    started = time.monotonic()
    for body in bodies:
        resp = http.request(
            "POST", f"{cfg.opensearch_url}/_bulk?filter_path=errors,items.*.status,items.*.error", body=body,
            headers={"Content-Type": "application/x-ndjson"},
        )  # fmt: skip
        assert resp.status == 200 and not orjson.loads(resp.data)["errors"]
    ceiling = n / (time.monotonic() - started)
    print(f"  opensearch: {len(bodies)} bulk bodies, {sum(map(len, bodies)) / 1e6:.1f} MB")
    for prefix in (cfg.index_prefix, ceiling_cfg.index_prefix):
        http.request("DELETE", f"{cfg.opensearch_url}/{prefix}-records-*")
        for name in index_templates(dataclasses.replace(cfg, index_prefix=prefix)):
            http.request("DELETE", f"{cfg.opensearch_url}/_index_template/{name}")
    return sink_rate, ceiling


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=50_000, help="records to produce (default 50000)")
    ap.add_argument("--body-bytes", type=int, default=1024, help="request body size per record (default 1024)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--flush-records", type=int, default=5000, help="S3 objects and OpenSearch batches")
    ap.add_argument("--only", choices=("s3", "opensearch"), default=None)
    args = ap.parse_args()

    stack = load(StackConfig)
    u = uuid.uuid4().hex[:8]
    cfg = sink_config(
        stack, f"bench{u}", partitions=args.partitions, flush_records=args.flush_records, flush_span_s=86400.0,
        s3_prefix="bench", sink_topics=f"t.records.bench{u}", flush_bytes=256 << 20,
    )  # fmt: skip
    create_topics(cfg)
    body = (b'{"instances": [' + b"[0.1, 0.2, 0.3, 0.4], " * (args.body_bytes // 22))[: args.body_bytes - 2] + b"]}"
    recs = []
    for i in range(args.records):
        r = make_record(i, t_us=T0_US + i * 10_000)
        r["request"] = {**r["request"], "body": body, "size": len(body)}
        recs.append(r)
    print(f"producing {args.records} records of ~{args.body_bytes} B into {args.partitions} partitions ...")
    produce(cfg, cfg.topic_records, "inference_record", recs)
    produce_ticks(cfg, cfg.topic_records, T0_US + 10**12)
    rows = []
    if args.only in (None, "s3"):
        rows.append(("s3 (parquet)", *bench_s3(dataclasses.replace(cfg, sink_group=f"bench-s3-{u}"), args.records)))
    if args.only in (None, "opensearch"):
        os_cfg = dataclasses.replace(cfg, sink_group=f"bench-os-{u}")
        rows.append(("opensearch", *bench_opensearch(os_cfg, args.records, recs)))
    print(f"\n{'sink':<14} {'sink rec/s':>12} {'ceiling rec/s':>14} {'ratio':>7}")
    for name, rate, ceiling in rows:
        print(f"{name:<14} {rate:>12,.0f} {ceiling:>14,.0f} {rate / ceiling:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
