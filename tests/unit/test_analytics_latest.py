"""Readers take the latest revision of each record: the Arrow version (archive) agrees with the plain one."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from inferlog.analytics import latest_records, latest_revisions

ROW = st.fixed_dictionaries(
    {
        "join_key": st.sampled_from(["a", "b", "c"]),
        "ordinal": st.sampled_from([1, 2]),
        "revision": st.sampled_from([1, 2]),
        "status": st.sampled_from(["complete", "request_only"]),
    }
)


def test_a_correction_supersedes_the_one_sided_row_and_others_stay() -> None:
    rows: list[dict[str, Any]] = [
        {"join_key": "k", "ordinal": 1, "revision": 1, "status": "request_only"},
        {"join_key": "k", "ordinal": 2, "revision": 1, "status": "complete"},  # a reused id: its own record
        {"join_key": "k", "ordinal": 1, "revision": 2, "status": "complete"},
        {"join_key": "old", "ordinal": None, "revision": None, "status": "complete"},  # written before revisions
    ]
    expected = [rows[1], rows[2], rows[3]]
    assert latest_records(rows) == expected
    assert latest_revisions(pa.Table.from_pylist(rows)).to_pylist() == expected


def test_a_table_without_revisions_is_returned_as_it_is() -> None:
    table = pa.table({"join_key": ["k", "k"], "status": ["request_only", "complete"]})
    assert latest_revisions(table) is table


@settings(max_examples=200, deadline=None)
@given(st.lists(ROW, max_size=30))
def test_the_arrow_and_the_plain_reader_agree(rows: list[dict[str, object]]) -> None:
    unique = [dict(r, n=i) for i, r in enumerate(rows)]
    # the archive holds each (identity, revision) once; keep the first of repeats, as both readers then agree
    seen: set[tuple[object, object, object]] = set()
    rows_once = []
    for r in unique:
        if (r["join_key"], r["ordinal"], r["revision"]) not in seen:
            seen.add((r["join_key"], r["ordinal"], r["revision"]))
            rows_once.append(r)
    table = pa.Table.from_pylist(rows_once) if rows_once else pa.table({"join_key": pa.array([], pa.string())})
    got = latest_revisions(table).to_pylist() if rows_once else []
    assert got == latest_records(rows_once)
