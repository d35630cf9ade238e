"""TensorBoard event files written by hand: TFRecord framing around protobuf-encoded `Event`s, no dependency.

The `tensorboard` package is not a requirement of the harness, and a scalar event is a few dozen bytes of a fixed
shape, so this writes them itself. Format (tensorflow/core/util/event.proto, tensorflow/core/lib/io/record_writer):
a record is uint64 length (little-endian), uint32 masked CRC32C of those 8 bytes, the data, uint32 masked CRC32C of
the data. The first record is an Event carrying the file version; each scalar is an Event whose summary holds one
value (tag, simple_value).
"""
from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

FILE_VERSION = "brain.Event:2"
_MASK_DELTA = 0xA282EAD8


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli polynomial, reflected
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`, as TFRecord checksums it."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: a CRC of bytes that themselves hold CRCs would otherwise be weak."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # a negative int64 is its two's complement, ten bytes
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def scalar_event(wall_time: float, step: int, tag: str, value: float) -> bytes:
    """Event{wall_time=1: double, step=2: int64, summary=5: Summary{value=1: Value{tag=1, simple_value=2: float}}}."""
    value_msg = _bytes_field(1, tag.encode()) + _field(2, 5) + struct.pack("<f", value)
    summary = _bytes_field(1, value_msg)
    return _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step) + _bytes_field(5, summary)


def version_event(wall_time: float) -> bytes:
    """Event{wall_time=1, file_version=3}: what a reader expects first."""
    return _field(1, 1) + struct.pack("<d", wall_time) + _bytes_field(3, FILE_VERSION.encode())


class EventFile:
    """`events.out.tfevents.<seconds>.<host>` in `folder`: records queued in memory, appended to the file (made on
    the first `flush`) only then, so the caller decides when disk errors can arise."""

    def __init__(self, folder: Path):
        now = time.time()
        self.path = Path(folder) / f"events.out.tfevents.{int(now)}.{socket.gethostname()}"
        self._queued = [tfrecord(version_event(now))]

    def scalar(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        self._queued.append(tfrecord(scalar_event(time.time() if wall_time is None else wall_time, step, tag, value)))

    def flush(self) -> None:
        """Append what is queued; opened per flush, so nothing is left open when a run stops."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(b"".join(self._queued))
        self._queued = []
