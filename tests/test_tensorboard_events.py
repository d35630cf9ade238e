"""The hand-written TensorBoard event file's format, byte for byte: CRC-32C and its mask, TFRecord framing, the
version and scalar Events (end to end through a run: tests/test_steplog.py)."""
import struct

from bench.records.tensorboard_events import crc32c, masked_crc32c, scalar_event, tfrecord, version_event


def test_crc32c_check_values():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC catalogue's check value for CRC-32C
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 (iSCSI) B.4 vectors
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(b"") == 0


def test_masked_crc_is_the_rotation_plus_the_delta():
    crc = 0xE3069283
    rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
    assert masked_crc32c(b"123456789") == (rotated + 0xA282EAD8) & 0xFFFFFFFF


def test_scalar_event_bytes():
    """Event{wall_time 1.5, step 300, summary{value{tag "loss", simple_value 2.0}}}, encoded by hand."""
    expected = (b"\x09" + b"\x00\x00\x00\x00\x00\x00\xf8\x3f"  # field 1, fixed64: 1.5
                + b"\x10" + b"\xac\x02"  # field 2, varint: 300 = 0b10_0101100
                + b"\x2a\x0d"  # field 5, 13 bytes: the Summary
                + b"\x0a\x0b"  # Summary field 1, 11 bytes: the Value
                + b"\x0a\x04loss"  # Value field 1: the tag
                + b"\x15\x00\x00\x00\x40")  # Value field 2, fixed32: 2.0
    assert scalar_event(1.5, 300, "loss", 2.0) == expected


def test_version_event_bytes():
    assert version_event(1.5) == b"\x09\x00\x00\x00\x00\x00\x00\xf8\x3f\x1a\x0dbrain.Event:2"


def test_tfrecord_framing():
    record = tfrecord(b"abc")
    assert record[:8] == b"\x03" + bytes(7)
    assert record[8:12] == struct.pack("<I", masked_crc32c(record[:8]))
    assert record[12:15] == b"abc" and record[15:] == struct.pack("<I", masked_crc32c(b"abc"))
