"""Byte-level tests of the emulator's wire protocol framing and encoding."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmdb.emulator import protocol
from warmdb.emulator.protocol import (
    CancelRequest,
    GSSEncRequest,
    MessageFramer,
    ProtocolError,
    SSLRequest,
    StartupMessage,
    StartupReader,
)


def _packet(code: int, body: bytes = b"") -> bytes:
    return struct.pack("!ii", len(body) + 8, code) + body


def test_ssl_request_bytes():
    assert protocol.parse_startup(bytes.fromhex("0000000804d2162f")) == SSLRequest()


def test_gssenc_request_bytes():
    assert protocol.parse_startup(bytes.fromhex("0000000804d21630")) == GSSEncRequest()


def test_cancel_request_round_trip():
    packet = protocol.cancel_request(1234, -5)
    assert packet == bytes.fromhex("0000001004d2162e000004d2fffffffb")
    assert protocol.parse_startup(packet) == CancelRequest(1234, -5)


def test_startup_message_round_trip():
    params = {"user": "admin", "database": "postgres", "application_name": "é"}
    packet = protocol.startup_message(params)
    assert packet[4:8] == b"\x00\x03\x00\x00"
    assert packet.endswith(b"\x00\x00")
    assert protocol.parse_startup(packet) == StartupMessage(params)


@pytest.mark.parametrize(
    ("packet", "match"),
    [
        (b"\x00\x00\x00\x08\x00\x03", "shorter"),
        (_packet(196608, b"user\x00a\x00\x00")[:-1], "length"),
        (_packet(12345), "unsupported"),
        (_packet(196608, b"user\x00admin\x00"), "pairs"),
        (_packet(196608, b"user\x00admin"), "terminated"),
        (_packet(196608, b"user\x00\xff\x00\x00"), "UTF-8"),
        (_packet(196608, b"database\x00x\x00\x00"), "no user"),
        (_packet(196608, b"user\x00a\x00user\x00b\x00\x00"), "repeat"),
        (_packet(196608, b"\x00"), "no user"),
        # An SSLRequest code with a body is not an SSLRequest.
        (_packet(protocol.SSL_REQUEST_CODE, b"x"), "unsupported"),
    ],
)
def test_parse_startup_rejects(packet, match):
    with pytest.raises(ProtocolError, match=match):
        protocol.parse_startup(packet)


def test_startup_reader_byte_by_byte():
    packet = protocol.startup_message({"user": "admin"})
    reader = StartupReader()
    results = []
    for byte in packet:
        assert reader.needed() >= 1
        results.append(reader.feed(bytes([byte])))
    assert results[:-1] == [None] * (len(packet) - 1)
    assert results[-1] == StartupMessage({"user": "admin"})


@pytest.mark.parametrize("length", [0, 7, protocol.MAX_STARTUP_PACKET + 1, -1])
def test_startup_reader_rejects_length(length):
    reader = StartupReader()
    with pytest.raises(ProtocolError, match="out of range"):
        reader.feed(struct.pack("!i", length))


def test_startup_reader_refuses_extra_bytes():
    reader = StartupReader()
    with pytest.raises(ProtocolError, match="after"):
        reader.feed(bytes.fromhex("0000000804d2162f") + b"Q")


def test_error_response_bytes():
    message = protocol.error_response("53400", "rate exceeded.", severity="FATAL")
    body = b"SFATAL\x00VFATAL\x00C53400\x00Mrate exceeded.\x00\x00"
    assert message == b"E" + struct.pack("!i", len(body) + 4) + body
    assert protocol.error_fields(message) == {
        "S": "FATAL",
        "V": "FATAL",
        "C": "53400",
        "M": "rate exceeded.",
    }


def test_replace_error_message_keeps_severity_drops_detail():
    original = protocol.encode(
        b"E", b"SERROR\x00C40P01\x00Mdeadlock detected\x00DProcess 1 waits\x00P7\x00\x00"
    )
    replaced = protocol.replace_error_message(original, code="40001", text="OC000 conflict")
    assert protocol.error_fields(replaced) == {
        "S": "ERROR",
        "C": "40001",
        "M": "OC000 conflict",
        "P": "7",
    }


def test_authentication_messages():
    assert protocol.authentication_cleartext() == b"R\x00\x00\x00\x08\x00\x00\x00\x03"
    assert protocol.authentication_code(b"R\x00\x00\x00\x08\x00\x00\x00\x00") == 0
    with pytest.raises(ProtocolError):
        protocol.authentication_code(b"Z\x00\x00\x00\x05I")


def test_backend_key_data_round_trip():
    message = protocol.backend_key_data(42, 7)
    assert message == b"K\x00\x00\x00\x0c\x00\x00\x00\x2a\x00\x00\x00\x07"
    assert protocol.parse_backend_key_data(message) == (42, 7)
    with pytest.raises(ProtocolError):
        protocol.parse_backend_key_data(message + b"x")


def test_password_message():
    assert protocol.password_from_message(protocol.encode(b"p", b"tok\x00")) == "tok"
    with pytest.raises(ProtocolError):
        protocol.password_from_message(protocol.encode(b"p", b"tok"))
    with pytest.raises(ProtocolError):
        protocol.password_from_message(protocol.encode(b"Q", b"tok\x00"))
    with pytest.raises(ProtocolError):
        protocol.password_from_message(protocol.encode(b"p", b"\xff\x00"))


def test_ready_for_query_and_query():
    assert protocol.ready_for_query(b"T") == b"Z\x00\x00\x00\x05T"
    assert protocol.ready_status(b"Z\x00\x00\x00\x05E") == b"E"
    message = protocol.query_message("select 1")
    assert message == b"Q\x00\x00\x00\x0dselect 1\x00"
    assert protocol.query_text(message) == "select 1"


@pytest.mark.parametrize(
    ("tag", "rows", "command"),
    [
        (b"INSERT 0 12", 12, "INSERT"),
        (b"UPDATE 3", 3, "UPDATE"),
        (b"DELETE 0", 0, "DELETE"),
        (b"MERGE 4001", 4001, "MERGE"),
        (b"COPY 5", 5, "COPY"),
        (b"SELECT 7", 0, "SELECT"),
        (b"CREATE TABLE", 0, "CREATE"),
        (b"BEGIN", 0, "BEGIN"),
        (b"INSERT 0 x", 0, "INSERT"),
    ],
)
def test_modified_rows(tag, rows, command):
    message = protocol.encode(b"C", tag + b"\x00")
    assert protocol.modified_rows(message) == rows
    assert protocol.command_tag(message) == command


def test_framer_splits_and_keeps_raw_bytes():
    stream = b"".join(
        [
            protocol.encode(b"T", b"row description"),
            protocol.encode(b"D", b""),
            protocol.encode(b"C", b"SELECT 1\x00"),
            protocol.ready_for_query(b"I"),
        ]
    )
    framer = MessageFramer(1024)
    first = framer.feed(stream[:7])
    assert first == []
    assert framer.buffered == 7
    rest = framer.feed(stream[7:])
    assert b"".join(rest) == stream
    assert [m[:1] for m in rest] == [b"T", b"D", b"C", b"Z"]
    assert framer.buffered == 0


@pytest.mark.parametrize("length", [3, -1, 1025])
def test_framer_rejects_bad_length(length):
    framer = MessageFramer(1024)
    with pytest.raises(ProtocolError, match="out of range"):
        framer.feed(b"Q" + struct.pack("!i", length))


_messages = st.lists(
    st.tuples(st.sampled_from(b"QPBESDdXCZ"), st.binary(max_size=300)), max_size=20
)


@given(messages=_messages, cuts=st.lists(st.integers(min_value=0, max_value=7000), max_size=10))
def test_framer_is_chunking_invariant(messages, cuts):
    """However a valid stream is cut, the framer returns exactly its messages."""
    encoded = [protocol.encode(bytes([kind]), body) for kind, body in messages]
    stream = b"".join(encoded)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    framer = MessageFramer(1024)
    out: list[bytes] = []
    previous = 0
    for point in [*points, len(stream)]:
        out += framer.feed(stream[previous:point])
        previous = point
    assert out == encoded
    assert framer.buffered == 0


@given(data=st.binary(max_size=2000), chunk=st.integers(min_value=1, max_value=64))
def test_framer_fuzz_never_fails_unexpectedly(data, chunk):
    """Arbitrary bytes give whole messages or ProtocolError; never another exception."""
    framer = MessageFramer(512)
    try:
        for start in range(0, len(data), chunk):
            for message in framer.feed(data[start : start + chunk]):
                (length,) = struct.unpack_from("!i", message, 1)
                assert len(message) == length + 1
                assert 4 <= length <= 512
    except ProtocolError:
        pass


@given(data=st.binary(max_size=400))
def test_startup_fuzz_never_fails_unexpectedly(data):
    """Arbitrary startup bytes give a packet, need more, or raise ProtocolError."""
    reader = StartupReader(max_size=300)
    pos = 0
    try:
        while pos < len(data):
            take = data[pos : pos + reader.needed()]
            pos += len(take)
            packet = reader.feed(take)
            if packet is not None:
                assert isinstance(
                    packet, (SSLRequest, GSSEncRequest, CancelRequest, StartupMessage)
                )
                reader = StartupReader(max_size=300)
    except ProtocolError:
        pass


@given(
    params=st.dictionaries(
        st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), min_size=1),
        st.text(st.characters(blacklist_characters="\x00", codec="utf-8")),
        max_size=5,
    ),
    user=st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), min_size=1),
)
def test_startup_message_property_round_trip(params, user):
    params = {**params, "user": user}
    assert protocol.parse_startup(protocol.startup_message(params)) == StartupMessage(params)


def test_framer_holds_an_incomplete_message_once():
    """Linear framing: the held-back start of a large message is kept, not copied per read.

    The old framer re-copied everything buffered on every read (quadratic: a 32 MiB query
    in 64 KiB reads copied about 8 GiB); its peak memory was three times what it held.
    """
    import tracemalloc

    size = 8 * 1024 * 1024
    message = protocol.encode(b"Q", b"x" * (size - 1) + b"\x00")
    chunks = [message[i : i + 65536] for i in range(0, len(message), 65536)]
    framer = protocol.MessageFramer(64 * 1024 * 1024)
    tracemalloc.start()
    try:
        for chunk in chunks[:-1]:
            assert framer.feed(chunk) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert framer.buffered == len(message) - len(chunks[-1])
    # The chunks themselves were allocated before tracing: holding them costs a list.
    assert peak < size // 4
    assert framer.feed(chunks[-1]) == [message]
    assert framer.buffered == 0
