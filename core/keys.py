"""The join key and the Java-compatible partitioner.

Join key = ``namespace/inferenceservicename/component/ce-id``. The request and the response of one
inference share it (KServe gives both the same ``Ce-Id``); the namespace/isvc/component scope keeps
callers that reuse ids from colliding across models. Deduplication is on ``(source, id, type)``.
"""

from __future__ import annotations


def join_key(namespace: str, isvc: str, component: str, ce_id: str) -> str:
    return f"{namespace}/{isvc}/{component}/{ce_id}"


def split_join_key(key: str) -> tuple[str, str, str, str]:
    """Inverse of :func:`join_key`; the ce-id may itself contain slashes."""
    namespace, isvc, component, ce_id = key.split("/", 3)
    return namespace, isvc, component, ce_id


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's ``Utils.murmur2``), as a signed 32-bit int."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = (
            (data[i4] & 0xFF)
            + ((data[i4 + 1] & 0xFF) << 8)
            + ((data[i4 + 2] & 0xFF) << 16)
            + ((data[i4 + 3] & 0xFF) << 24)
        )
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    extra = length % 4
    index = length & ~3
    if extra >= 3:
        h ^= (data[index + 2] & 0xFF) << 16
    if extra >= 2:
        h ^= (data[index + 1] & 0xFF) << 8
    if extra >= 1:
        h ^= data[index] & 0xFF
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the Java default partitioner (and librdkafka ``murmur2_random``) picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
