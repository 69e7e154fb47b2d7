"""Settings of the streams worker (``inferlog streams``); every field is a flag and an ``INFERLOG_*`` variable."""

from __future__ import annotations

from dataclasses import dataclass

from core.config import CommonConfig, env_name, setting
from core.errors import ConfigError


@dataclass(frozen=True)
class StreamsConfig(CommonConfig):
    """Settings of the Faust join worker."""

    app_id: str = setting(
        "inferlog-streams",
        "Faust application id: the consumer group, and the prefix of the changelog and expiry-marker topics",
    )
    pair_timeout_s: float = setting(
        30.0,
        "Event-time seconds to wait for the other side of a pair before emitting a one-sided record: the global "
        "default, after the ISVC annotation inferlog.io/pair-timeout, the model-metadata key pair_timeout and, "
        "for OpenAI-style bodies, llm_pair_timeout_s (see streams/timeouts.py)",
    )
    llm_pair_timeout_s: float = setting(
        600.0,
        "Pair timeout (event-time seconds) of an inference whose first-seen body is OpenAI-style (protocol "
        "openai: chat/completions, streamed or not), unless its annotation or model metadata sets one. Memory: "
        "a pending side holds its body in the join table until paired or expired, so an LLM model at R "
        "requests/s whose answers take L s keeps about R*min(L, timeout) bodies, and R*timeout bodies if "
        "responses never come (e.g. 20 req/s x 600 s x 8 KiB = ~94 MiB in RocksDB and its changelog)",
    )
    done_retention_s: float = setting(
        3600.0,
        "Event-time seconds a joined or expired pair is remembered (a compact 'done' entry: its fingerprints) to "
        "drop late duplicates, including an 'inferlog replay' of a recent range into the pipeline. Trade-off: the "
        "join table and the worker's memory hold one entry per pair of the last done_retention_s of event time "
        "(~150-200 B on disk plus ~150 B of expiry heap in memory per pair, e.g. ~1 GB of RAM for one hour at "
        "2,000 pairs/s), and a restarted or rebalanced worker scans them once; a duplicate older than this is "
        "joined again. Purging costs one changelog delete per pair, batched at the barrier",
    )
    late_window_s: float = setting(
        900.0,
        "Event-time seconds after a one-sided record's deadline during which a late partner corrects it (a "
        "complete record of revision 2 with the same identity, and a retraction of its failure signal) instead "
        "of making a second one-sided record; capped by done_retention_s, 0 disables it. Memory: the expired side "
        "keeps its body in the join table that long, about (one-sided records/s) x late_window_s x body size "
        "(e.g. 2 failed requests/s x 900 s x 8 KiB = ~14 MiB)",
    )
    tick_interval_s: float = setting(
        60.0, "A tick is written to records/failures when a partition's watermark enters a new bucket of this size"
    )
    idle_timeout_s: float = setting(
        60.0,
        "Wall-clock seconds without events after which an idle partition's event time is advanced (only once "
        "every event of the partition is processed and committed: a backlog is not idleness)",
    )
    idle_check_interval_s: float = setting(5.0, "Wall-clock seconds between checks for idle partitions")
    store_dir: str = setting(
        "/var/tmp/inferlog-streams", "Local RocksDB state directory; give every worker on a host its own"
    )
    standby_replicas: int = setting(1, "Standby replicas of the join table kept by other workers")
    metrics_port: int = setting(0, "Port of the Prometheus /metrics endpoint (0: disabled)")
    startup_timeout_s: float = setting(
        30.0,
        "Exit with code 75 (for the supervisor to restart the worker) if it has not joined its group within this "
        "many seconds of starting (a safety net; it logs where the start waits). Table recovery after the join is "
        "not limited.",
    )
    commit_interval_s: float = setting(2.8, "Seconds between offset commits (after the producer is flushed)")
    buffer_maxsize: int = setting(16384, "Faust stream buffer size per partition")
    fetch_wait_s: float = setting(
        0.05,
        "Longest wait of the broker for a fetch to fill: events arriving during a fetch of quiet partitions wait "
        "this long (Faust fixes 1.5 s, which delayed outputs by about that much at 400 inferences/s)",
    )
    state_flush_interval_s: float = setting(
        0.2,
        "Join-state barrier interval: outputs are awaited, then state changes are written to RocksDB and the "
        "changelog, then the events are acked (at most this old or state_flush_events many, whichever comes first)",
    )
    state_flush_events: int = setting(4000, "Events processed between two join-state barriers at most")
    session_timeout_s: float = setting(
        30.0, "Consumer-group session timeout: how long a crashed worker keeps its partitions before a rebalance"
    )

    def validate(self) -> None:
        super().validate()
        if not self.app_id.strip():
            raise ConfigError(f"{env_name('app_id')} must not be empty")
        for name in (
            "startup_timeout_s",
            "pair_timeout_s",
            "llm_pair_timeout_s",
            "tick_interval_s",
            "idle_timeout_s",
            "idle_check_interval_s",
            "state_flush_interval_s",
            "state_flush_events",
            "fetch_wait_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{env_name(name)} must be > 0")
        if self.done_retention_s < 0:
            raise ConfigError(f"{env_name('done_retention_s')} must be >= 0")
        if self.late_window_s < 0:
            raise ConfigError(f"{env_name('late_window_s')} must be >= 0")
        if self.standby_replicas < 0:
            raise ConfigError(f"{env_name('standby_replicas')} must be >= 0")
        if not 0 <= self.metrics_port < 65536:
            raise ConfigError(f"{env_name('metrics_port')} must be a port number or 0")

    @property
    def topic_expiry(self) -> str:
        """The expiry-marker topic, co-partitioned with the events topic."""
        return f"{self.app_id}-expiry"
