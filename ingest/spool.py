"""The durable local spool: an fsynced, append-only log of Kafka records, drained in order.

On disk: ``<dir>/<20-digit sequence>.seg`` segment files of frames ``<u32 length><u32 crc32><payload>``
(payload = key, headers, value: everything needed to re-produce the record identically) and a ``cursor`` file
``{"segment": n, "offset": o}`` naming the first record not yet delivered, replaced atomically (write, fsync,
rename, fsync of the directory). An append returns only after ``fsync``, so an acknowledged event survives
``kill -9`` and power loss; a torn frame at the tail (a write cut short by a crash, never acknowledged) is cut
off on open. Segments behind the cursor are deleted. All file I/O runs on one thread, so appends, reads and
commits are serialised without locks; concurrent appends share one ``fsync`` (group commit).
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson

from ingest.errors import SpoolFull

log = logging.getLogger("ingest.spool")

_FRAME = struct.Struct("<II")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
SUFFIX = ".seg"


@dataclass(frozen=True)
class Record:
    """One Kafka record of the events topic, exactly as it is (or will be) produced."""

    key: bytes
    headers: tuple[tuple[str, bytes], ...]
    value: bytes

    def header(self, name: str) -> str:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", "replace")
        return ""

    def encode(self) -> bytes:
        parts = [_U32.pack(len(self.key)), self.key, _U16.pack(len(self.headers))]
        for name, value in self.headers:
            raw = name.encode()
            parts += [_U16.pack(len(raw)), raw, _U32.pack(len(value)), value]
        parts += [_U32.pack(len(self.value)), self.value]
        return b"".join(parts)

    @classmethod
    def decode(cls, payload: bytes) -> Record:
        pos = 0

        def take(n: int) -> bytes:
            nonlocal pos
            if pos + n > len(payload):
                raise ValueError("truncated record")
            out = payload[pos : pos + n]
            pos += n
            return out

        key = take(_U32.unpack(take(4))[0])
        headers = []
        for _ in range(_U16.unpack(take(2))[0]):
            name = take(_U16.unpack(take(2))[0]).decode()
            headers.append((name, take(_U32.unpack(take(4))[0])))
        value = take(_U32.unpack(take(4))[0])
        return cls(key, tuple(headers), value)

    def frame(self) -> bytes:
        payload = self.encode()
        return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int


class SpoolLog:
    """The synchronous core. Not thread-safe: :class:`Spool` calls it from a single thread."""

    def __init__(self, directory: str | Path, *, max_bytes: int, segment_bytes: int) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cursor = self._load_cursor()
        self.sizes: dict[int, int] = {}  # segment → durable size
        self.records = 0
        self._recover()
        self.active = max(self.sizes) if self.sizes else self.cursor.segment
        self.sizes.setdefault(self.active, 0)
        self._fh = open(self._path(self.active), "ab")  # noqa: SIM115 (kept open for appends)
        _fsync_dir(self.dir)

    # -- state ---------------------------------------------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        """Bytes not yet delivered (what counts against ``max_bytes``)."""
        return sum(self.sizes.values()) - self.cursor.offset

    def _path(self, segment: int) -> Path:
        return self.dir / f"{segment:020d}{SUFFIX}"

    def _load_cursor(self) -> Position:
        try:
            doc = orjson.loads((self.dir / "cursor").read_bytes())
            return Position(int(doc["segment"]), int(doc["offset"]))
        except FileNotFoundError:
            segments = self._segments()
            return Position(segments[0] if segments else 0, 0)

    def _segments(self) -> list[int]:
        out = []
        for p in self.dir.glob(f"*{SUFFIX}"):
            try:
                out.append(int(p.name[: -len(SUFFIX)]))
            except ValueError:
                continue
        return sorted(out)

    def _recover(self) -> None:
        for seg in self._segments():
            if seg < self.cursor.segment:
                self._path(seg).unlink(missing_ok=True)
                continue
            path = self._path(seg)
            data = path.read_bytes()
            start = self.cursor.offset if seg == self.cursor.segment else 0
            good, count = _scan(data, start)
            if good < len(data):
                log.warning(
                    "spool: cutting a torn or corrupt tail",
                    extra={"segment": path.name, "kept": good, "size": len(data)},
                )
                with open(path, "r+b") as fh:
                    fh.truncate(good)
                    fh.flush()
                    os.fsync(fh.fileno())
            self.sizes[seg] = good
            self.records += count
        if self.cursor.segment not in self.sizes and self.sizes:
            self.cursor = Position(min(self.sizes), 0)

    # -- operations ------------------------------------------------------------------------------------------
    def append(self, frames: Sequence[bytes]) -> None:
        """Write the frames and fsync. Raises :class:`SpoolFull` (writing nothing) when they do not fit."""
        total = sum(len(f) for f in frames)
        if self.size_bytes + total > self.max_bytes:
            raise SpoolFull(f"spool full ({self.size_bytes} of {self.max_bytes} bytes)")
        self._fh.write(b"".join(frames))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.sizes[self.active] += total
        self.records += len(frames)
        if self.sizes[self.active] >= self.segment_bytes:
            self._roll()

    def _roll(self) -> None:
        self._fh.close()
        self.active += 1
        self.sizes[self.active] = 0
        self._fh = open(self._path(self.active), "ab")  # noqa: SIM115
        _fsync_dir(self.dir)

    def read(self, max_records: int) -> list[tuple[Position, Record]]:
        """Up to ``max_records`` records from the cursor on, each with the position just after it."""
        out: list[tuple[Position, Record]] = []
        pos = self.cursor
        while len(out) < max_records and pos.segment <= self.active:
            size = self.sizes.get(pos.segment, 0)
            if pos.offset >= size:
                if pos.segment == self.active:
                    break
                pos = Position(pos.segment + 1, 0)
                continue
            with open(self._path(pos.segment), "rb") as fh:
                fh.seek(pos.offset)
                data = fh.read(size - pos.offset)
            at = 0
            while at < len(data) and len(out) < max_records:
                length, _crc = _FRAME.unpack_from(data, at)
                payload = data[at + 8 : at + 8 + length]
                at += 8 + length
                out.append((Position(pos.segment, pos.offset + at), Record.decode(payload)))
            pos = Position(pos.segment, pos.offset + at)
        return out

    def commit(self, pos: Position, delivered: int) -> None:
        """Everything before ``pos`` is in Kafka: move the cursor, delete finished segments."""
        self.records -= delivered
        while pos.segment < self.active and pos.offset >= self.sizes.get(pos.segment, 0):
            pos = Position(pos.segment + 1, 0)  # a finished segment: point at the next one
        if self.records == 0 and pos.segment == self.active and pos.offset >= self.sizes[self.active] > 0:
            self._roll()  # all delivered: start afresh so the old file can go
            pos = Position(self.active, 0)
        tmp = self.dir / "cursor.tmp"
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps({"segment": pos.segment, "offset": pos.offset}))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / "cursor")
        self.cursor = pos
        for seg in [s for s in self.sizes if s < pos.segment]:
            self._path(seg).unlink(missing_ok=True)
            del self.sizes[seg]
        _fsync_dir(self.dir)

    def close(self) -> None:
        self._fh.close()


def _scan(data: bytes, start: int) -> tuple[int, int]:
    """(end of the last intact frame, number of intact frames) from ``start``."""
    at, count = start, 0
    while at + 8 <= len(data):
        length, crc = _FRAME.unpack_from(data, at)
        end = at + 8 + length
        if end > len(data) or zlib.crc32(data[at + 8 : end]) != crc:
            break
        at, count = end, count + 1
    return at, count


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Asyncio face of :class:`SpoolLog`: group-committed appends, reads and commits on one I/O thread."""

    def __init__(self, directory: str | Path, *, max_bytes: int, segment_bytes: int) -> None:
        self._exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self.log = SpoolLog(directory, max_bytes=max_bytes, segment_bytes=segment_bytes)
        self._pending: list[tuple[list[bytes], asyncio.Future[None]]] = []
        self._reserved = 0
        self._writer: asyncio.Task[None] | None = None
        self.has_data = asyncio.Event()
        if self.log.records:
            self.has_data.set()

    @property
    def depth(self) -> int:
        """Records waiting to be delivered (durable ones plus those being written)."""
        if not self._pending:  # the hot path asks this per request
            return self.log.records
        return self.log.records + sum(len(f) for f, _ in self._pending)

    @property
    def size_bytes(self) -> int:
        return self.log.size_bytes + self._reserved

    @property
    def max_bytes(self) -> int:
        return self.log.max_bytes

    def has_room(self, nbytes: int = 0) -> bool:
        return self.size_bytes + nbytes <= self.log.max_bytes

    async def append(self, records: Sequence[Record]) -> None:
        """Return once ``records`` are fsynced; :class:`SpoolFull` when there is no room."""
        frames = [r.frame() for r in records]
        size = sum(len(f) for f in frames)
        if not self.has_room(size):
            raise SpoolFull(f"spool full ({self.size_bytes} of {self.log.max_bytes} bytes)")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((frames, fut))
        self._reserved += size
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop())
        await fut

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            frames = [f for fs, _ in batch for f in fs]
            size = sum(len(f) for f in frames)
            try:
                await loop.run_in_executor(self._exec, self.log.append, frames)
            except Exception as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(
                            exc if isinstance(exc, SpoolFull) else SpoolFull(f"spool write failed: {exc}")
                        )
            else:
                self.has_data.set()
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
            finally:
                self._reserved -= size

    async def wait_written(self) -> None:
        """Wait for the appends in progress to be durable (and readable)."""
        if self._writer is not None and not self._writer.done():
            await asyncio.wait({self._writer})

    async def read(self, max_records: int) -> list[tuple[Position, Record]]:
        return await asyncio.get_running_loop().run_in_executor(self._exec, self.log.read, max_records)

    async def commit(self, pos: Position, delivered: int) -> None:
        await asyncio.get_running_loop().run_in_executor(self._exec, self.log.commit, pos, delivered)
        if self.log.records == 0 and not self._pending:
            self.has_data.clear()

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(self._exec, self.log.close)
        self._exec.shutdown(wait=True)
