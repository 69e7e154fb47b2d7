"""The idle-partition fallback: a marker only for a partition without backlog, and a stale marker is ignored."""

from __future__ import annotations

from streams.idle import IdleTracker, caught_up


def test_a_partition_is_due_after_the_idle_timeout_once_per_timeout() -> None:
    idle = IdleTracker(3.0)
    idle.assigned(0, 100.0)
    idle.assigned(1, 100.0)
    idle.on_event(1, 41, 102.0)
    assert idle.due(102.9) == []
    assert idle.due(103.0) == [0]
    marker = idle.marker(0, 103.0, 5_000_000, 7)
    assert marker == {"base": 5_000_000, "elapsed": 3_000_000, "upto": 7}
    assert idle.due(105.0) == [1]  # 0: a marker was sent less than idle_timeout_s ago
    assert sorted(idle.due(106.0)) == [0, 1]  # its marker was not processed: the elapsed time keeps counting
    assert idle.marker(0, 106.0, 5_000_000, 7)["elapsed"] == 6_000_000


def test_caught_up_needs_the_committed_offset_at_the_end() -> None:
    assert caught_up(10, 10)
    assert caught_up(None, 0)  # an empty partition
    assert not caught_up(9, 10)  # a backlog: events in Kafka not processed (or not committed) yet
    assert not caught_up(None, 10)  # nothing known yet (before the seek after recovery)
    assert not caught_up(10, None)


def test_a_marker_is_ignored_after_an_event_that_arrived_after_it() -> None:
    idle = IdleTracker(3.0)
    idle.assigned(0, 100.0)
    assert idle.on_marker(0, {"base": 1, "elapsed": 3_000_000, "upto": 50}, 101.0)  # nothing processed yet
    idle.on_event(0, 49, 102.0)
    assert idle.on_marker(0, {"base": 1, "elapsed": 3_000_000, "upto": 50}, 103.0)  # all before it
    idle.on_event(0, 50, 104.0)
    assert not idle.on_marker(0, {"base": 1, "elapsed": 3_000_000, "upto": 50}, 105.0)  # 50 came after it
    assert idle.on_marker(0, {"base": 1, "elapsed": 3_000_000}, 106.0)  # an old marker without upto


def test_processing_a_marker_restarts_the_idle_time_and_clear_forgets_all() -> None:
    idle = IdleTracker(3.0)
    idle.assigned(0, 100.0)
    idle.marker(0, 103.0, None, 0)
    idle.on_marker(0, {"base": None, "elapsed": 3_000_000, "upto": 0}, 103.5)
    assert idle.due(106.0) == []
    assert idle.due(106.5) == [0]
    idle.on_event(0, 3, 107.0)
    idle.clear()
    assert idle.due(1000.0) == [] and idle.next_offset == {}
