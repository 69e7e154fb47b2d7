"""Wire conventions shared by the stream processor and the sinks, besides the Avro values.

Ticks: the streams app advances time in-band so that sinks flush idle partitions deterministically. A tick
is a record on ``inferlog.records`` (and ``inferlog.failures``) with a ``None`` key, an empty value and the
header ``inferlog_tick`` = the partition's event-time watermark in epoch microseconds (ASCII). It is written
to an explicit partition. A replay meets the same ticks at the same offsets and cuts the same files.
"""

from __future__ import annotations

from collections.abc import Sequence

TICK_HEADER = "inferlog_tick"


def tick_time_us(headers: Sequence[tuple[str, bytes | None]] | None) -> int | None:
    """The watermark carried by a tick record, or ``None`` when the record is not a tick."""
    for name, value in headers or ():
        if name == TICK_HEADER and value is not None:
            return int(value)
    return None
