"""Latency percentiles and failure rate per model, and tokens per LLM model, with DuckDB over inferlog's
Parquet archive (the latest revision of each record: a request_only record whose response came late is counted
as the complete record that superseded it).

Run it against the local stack after `make run` (or any deployment: set the INFERLOG_* variables):

    .venv/bin/python examples/analytics_duckdb.py [--namespace demo] [--date 2026-11-24]

The archive is read with pyarrow (S3 API, Hive partitions namespace=/isvc=/date=/hour=) and queried in
process by DuckDB, so no DuckDB extension has to be downloaded.
"""

from __future__ import annotations

import argparse

import duckdb

from inferlog.analytics import read_archive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespace", help="only this namespace")
    parser.add_argument("--date", help="only this date partition (YYYY-MM-DD)")
    args = parser.parse_args()

    records = read_archive(namespace=args.namespace, date=args.date)  # a pyarrow.Table
    print(f"{records.num_rows} records in the archive\n")
    con = duckdb.connect()
    con.register("records", records)
    con.sql(
        """
        select namespace || '/' || isvc                               as model,
               count(*)                                               as inferences,
               round(quantile_cont(latency_ms, 0.50), 1)              as p50_ms,
               round(quantile_cont(latency_ms, 0.95), 1)              as p95_ms,
               round(quantile_cont(latency_ms, 0.99), 1)              as p99_ms,
               count(*) filter (where status = 'request_only')        as failed,
               round(100.0 * count(*) filter (where status = 'request_only') / count(*), 2) as failure_rate_pct,
               count(*) filter (where error is not null)              as error_bodies
        from records
        group by all
        order by inferences desc
        """
    ).show()
    print("LLM models (protocol openai): tokens and latency")
    con.sql(
        """
        select namespace || '/' || isvc                               as model,
               count(*)                                               as calls,
               count(*) filter (where revision > 1)                   as corrected,
               sum(llm_prompt_tokens)                                 as prompt_tokens,
               sum(llm_completion_tokens)                             as completion_tokens,
               round(avg(llm_completion_tokens), 1)                   as avg_completion_tokens,
               round(quantile_cont(latency_ms, 0.50) / 1000, 2)       as p50_s,
               round(quantile_cont(latency_ms, 0.99) / 1000, 2)       as p99_s,
               round(sum(llm_completion_tokens) / nullif(sum(latency_ms) / 1000, 0), 2) as tokens_per_s,
               count(*) filter (where llm_finish_reason = 'length')   as cut_by_length
        from records
        where protocol = 'openai'
        group by all
        order by calls desc
        """
    ).show()


if __name__ == "__main__":
    main()
