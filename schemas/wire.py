"""Wire conventions shared by the stream processor and the sinks, besides the Avro values.

Ticks: the streams app advances time in-band so that sinks flush idle partitions deterministically. A tick
is a record on ``inferlog.records`` (and ``inferlog.failures``) with a ``None`` key, an empty value and the
header ``inferlog_tick`` = the partition's event-time watermark in epoch microseconds (ASCII). It is written
to an explicit partition. A replay meets the same ticks at the same offsets and cuts the same files.

Ordinals: a caller that reuses an id (a retry with the same ``Ce-Id``) makes several records with the same join
key. The streams app counts the records of a key; the second and later carry the header ``inferlog_ordinal`` =
n (ASCII). The Kafka key stays the join key (records stay co-partitioned with their events); a record's
*identity* in the sinks (OpenSearch ``_id``) and in reconciliation is :func:`record_id`: the join key, or
``<join key>#<n>``.
"""

from __future__ import annotations

from collections.abc import Sequence

TICK_HEADER = "inferlog_tick"
ORDINAL_HEADER = "inferlog_ordinal"


def tick_time_us(headers: Sequence[tuple[str, bytes | None]] | None) -> int | None:
    """The watermark carried by a tick record, or ``None`` when the record is not a tick."""
    for name, value in headers or ():
        if name == TICK_HEADER and value is not None:
            return int(value)
    return None


def ordinal_headers(ordinal: int) -> list[tuple[str, bytes]] | None:
    """The headers of a record with this ordinal: none for the first record of a key."""
    return None if ordinal <= 1 else [(ORDINAL_HEADER, str(ordinal).encode())]


def record_id(join_key: str, headers: Sequence[tuple[str, bytes | None]] | None) -> str:
    """A record's identity: its join key, or ``<join key>#<n>`` when it is the n-th record of a reused id."""
    for name, value in headers or ():
        if name == ORDINAL_HEADER and value:
            return f"{join_key}#{int(value)}"
    return join_key
