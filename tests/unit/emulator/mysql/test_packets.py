"""Byte-level tests of the MySQL emulator's packet code (no sockets)."""

from __future__ import annotations

import contextlib
import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmdb.emulator.mysql import packets
from warmdb.emulator.mysql.packets import (
    MAX_PAYLOAD,
    CommandTracker,
    Greeting,
    Packet,
    PacketFramer,
    ProtocolError,
)

SCRAMBLE = b"abcdefghijklmnopqrst"


def _splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


# Framing ----------------------------------------------------------------------------------


def test_encode_packet_bytes():
    assert packets.encode_packet(0, b"\x01") == b"\x01\x00\x00\x00\x01"
    assert packets.encode_packet(3, b"") == b"\x00\x00\x00\x03"
    assert packets.encode_packet(255, b"ab")[:4] == b"\x02\x00\x00\xff"


def test_encode_packet_splits_at_16_mib():
    data = packets.encode_packet(7, b"x" * MAX_PAYLOAD)
    # A full packet, then an empty one that says "no more".
    assert data[:4] == b"\xff\xff\xff\x07"
    assert data[4 + MAX_PAYLOAD :] == b"\x00\x00\x00\x08"
    longer = packets.encode_packet(0, b"y" * (MAX_PAYLOAD + 2))
    assert longer[4 + MAX_PAYLOAD :] == b"\x02\x00\x00\x01yy"


@given(
    st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=6),
    st.lists(st.integers(0, 10_000), max_size=8),
)
def test_framer_yields_the_same_packets_whatever_the_split(items, cuts):
    stream = b"".join(packets.encode_packet(seq, payload) for seq, payload in items)
    framer = PacketFramer(1024)
    found: list[Packet] = []
    for chunk in _splits(stream, cuts):
        found += framer.feed(chunk)
    assert found == [Packet(seq, payload) for seq, payload in items]
    assert framer.buffered == 0


def test_framer_refuses_an_oversized_packet_on_its_header():
    framer = PacketFramer(100)
    with pytest.raises(ProtocolError, match="101 bytes exceeds the 100"):
        framer.feed(b"\x65\x00\x00\x00")


# Greeting ---------------------------------------------------------------------------------


def test_greeting_bytes():
    greeting = Greeting(
        server_version="8.0.36",
        connection_id=0x01020304,
        scramble=SCRAMBLE,
        capabilities=0x81FFF7FF,
        charset=0x21,
        status=0x0002,
        auth_plugin="mysql_native_password",
    )
    expected = (
        b"\x0a"
        + b"8.0.36\x00"
        + b"\x04\x03\x02\x01"
        + b"abcdefgh"
        + b"\x00"
        + b"\xff\xf7"  # capabilities, low half
        + b"\x21"
        + b"\x02\x00"
        + b"\xff\x81"  # capabilities, high half
        + b"\x15"  # 21: the scramble and its NUL
        + b"\x00" * 10
        + b"ijklmnopqrst\x00"
        + b"mysql_native_password\x00"
    )
    assert greeting.encode() == expected
    assert packets.parse_greeting(expected) == greeting


def test_parse_mariadb_greeting():
    # MariaDB 10.11's shape: the "5.5.5-" prefix, extended capabilities in the filler.
    payload = (
        b"\x0a5.5.5-10.11.19-MariaDB\x00\x2a\x00\x00\x00"
        + b"12345678\x00\xfe\xf7\x2d\x02\x00\xff\x81\x15"
        + b"\x00" * 6
        + b"\x1d\x00\x00\x00"
        + b"9abcdefghijk\x00mysql_native_password\x00"
    )
    greeting = packets.parse_greeting(payload)
    assert greeting.server_version == "5.5.5-10.11.19-MariaDB"
    assert greeting.connection_id == 42
    assert greeting.scramble == b"123456789abcdefghijk"
    assert greeting.capabilities == 0x81FFF7FE
    assert greeting.charset == 0x2D
    assert greeting.auth_plugin == "mysql_native_password"


def test_parse_greeting_refusal_and_garbage():
    with pytest.raises(ProtocolError, match="1040 Too many connections"):
        packets.parse_greeting(packets.err_packet(1040, "08004", "Too many connections"))
    with pytest.raises(ProtocolError, match="version 10"):
        packets.parse_greeting(b"\x09abc\x00")
    with pytest.raises(ProtocolError, match="truncated"):
        packets.parse_greeting(b"\x0a8.0\x00\x01")


@given(
    st.text(st.characters(blacklist_characters="\x00", max_codepoint=0x7F), max_size=40),
    st.integers(0, 2**32 - 1),
    st.binary(min_size=20, max_size=20).map(lambda b: bytes(33 + x % 94 for x in b)),
    st.integers(0, 2**32 - 1),
)
def test_greeting_round_trip(version, connection_id, scramble, caps):
    caps |= packets.CLIENT_SECURE_CONNECTION | packets.CLIENT_PLUGIN_AUTH
    greeting = Greeting(version, connection_id, scramble, caps, 8, 2, "mysql_native_password")
    assert packets.parse_greeting(greeting.encode()) == greeting


# Handshake response -----------------------------------------------------------------------


def test_ssl_request_bytes():
    caps = packets.CLIENT_PROTOCOL_41 | packets.CLIENT_SSL | packets.CLIENT_SECURE_CONNECTION
    payload = struct.pack("<IIB", caps, 1 << 24, 0x2D) + bytes(23)
    assert len(payload) == 32
    request = packets.parse_handshake_response(payload)
    assert request.is_ssl_request
    assert (request.capabilities, request.max_packet, request.charset) == (caps, 1 << 24, 0x2D)


def test_handshake_response_bytes_as_pymysql_sends_them():
    caps = (
        packets.CLIENT_PROTOCOL_41
        | packets.CLIENT_SECURE_CONNECTION
        | packets.CLIENT_PLUGIN_AUTH
        | packets.CLIENT_CONNECT_WITH_DB
        | packets.CLIENT_CONNECT_ATTRS
        | packets.CLIENT_SSL
    )
    attrs = b"\x0b\x04_pid\x0512345"
    payload = (
        struct.pack("<IIB", caps, 1 << 24, 0x2D)
        + bytes(23)
        + b"admin\x00"
        + b"\x14"
        + b"S" * 20
        + b"shop\x00"
        + b"mysql_native_password\x00"
        + attrs
    )
    response = packets.parse_handshake_response(payload)
    assert not response.is_ssl_request
    assert response.user == "admin"
    assert response.auth_response == b"S" * 20
    assert response.database == "shop"
    assert response.auth_plugin == "mysql_native_password"
    assert response.attributes == attrs


def test_handshake_response_lenenc_auth_data_as_mysql_connector_sends_it():
    caps = (
        packets.CLIENT_PROTOCOL_41
        | packets.CLIENT_SECURE_CONNECTION
        | packets.CLIENT_PLUGIN_AUTH
        | packets.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    )
    token = b"host:3306/?Action=connect&DBUser=admin&X-Amz-Signature=" + b"f" * 300 + b"\x00"
    payload = (
        struct.pack("<IIB", caps, 1 << 30, 0x21)
        + bytes(23)
        + b"admin\x00"
        + b"\xfc"
        + len(token).to_bytes(2, "little")
        + token
        + b"mysql_clear_password\x00"
    )
    response = packets.parse_handshake_response(payload)
    assert response.auth_plugin == packets.CLEAR_PASSWORD
    assert packets.clear_password(response.auth_response) == token[:-1].decode()
    # Never in a repr: the answer may be the token itself.
    assert "Signature" not in repr(response)
    assert "ffff" not in repr(response)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "truncated"),
        (struct.pack("<IIB", 0, 0, 0) + bytes(23) + b"a\x00\x00", "4.1"),
        (struct.pack("<IIB", packets.CLIENT_PROTOCOL_41, 0, 0) + bytes(23), "no user"),
        (struct.pack("<IIB", packets.RELAYABLE, 0, 0) + bytes(23) + b"a", "unterminated"),
        (struct.pack("<IIB", packets.RELAYABLE, 0, 0) + bytes(23) + b"a\x00\xfe\x01", "truncated"),
        (struct.pack("<IIB", packets.RELAYABLE, 0, 0) + bytes(23) + b"a\x00\xff", "invalid"),
        (struct.pack("<IIB", packets.RELAYABLE, 0, 0) + bytes(23) + b"\xff\x00\x00", "UTF-8"),
    ],
)
def test_malformed_handshake_responses(payload, match):
    with pytest.raises(ProtocolError, match=match):
        packets.parse_handshake_response(payload)


@given(
    user=st.text(
        st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=20
    ),
    auth=st.binary(max_size=400),
    database=st.one_of(st.none(), st.text("abc_", min_size=1, max_size=10)),
    lenenc=st.booleans(),
)
def test_handshake_response_round_trip(user, auth, database, lenenc):
    caps = packets.RELAYABLE & ~packets.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    if lenenc:
        caps |= packets.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    elif len(auth) > 255:
        auth = auth[:255]
    attrs = b"\x03\x01k\x00"
    payload = packets.handshake_response(
        capabilities=caps,
        max_packet=1 << 24,
        charset=0x21,
        user=user,
        auth_response=auth,
        database=database,
        auth_plugin="mysql_native_password",
        attributes=attrs,
    )
    response = packets.parse_handshake_response(payload)
    assert (response.user, response.auth_response, response.database) == (user, auth, database)
    assert response.attributes == attrs
    assert bool(response.capabilities & packets.CLIENT_CONNECT_WITH_DB) == bool(database)


def test_handshake_response_without_attributes_clears_the_flag():
    payload = packets.handshake_response(
        capabilities=packets.RELAYABLE, max_packet=1, charset=8, user="u"
    )
    caps = int.from_bytes(payload[:4], "little")
    assert not caps & packets.CLIENT_CONNECT_ATTRS
    assert not caps & packets.CLIENT_CONNECT_WITH_DB
    assert payload.endswith(b"u\x00\x00mysql_native_password\x00")


@given(st.integers(0, 2**64 - 1))
def test_lenenc_int_round_trip(value):
    reader = packets._Reader(packets.lenenc_int(value), "test")
    assert reader.lenenc_int() == value
    assert reader.remaining == 0


# Auth, OK and ERR -------------------------------------------------------------------------


def test_auth_switch_request_bytes():
    assert packets.auth_switch_request("mysql_clear_password") == (b"\xfemysql_clear_password\x00")


def test_clear_password():
    assert packets.clear_password(b"token\x00") == "token"
    assert packets.clear_password(b"token") == "token"
    assert packets.clear_password(b"") == ""
    with pytest.raises(ProtocolError, match="UTF-8"):
        packets.clear_password(b"\xff\x00")


def test_err_packet_bytes_and_parse():
    payload = packets.err_packet(1045, "28000", "Access denied")
    assert payload == b"\xff\x15\x04#28000Access denied"
    assert packets.parse_err(payload) == (1045, "28000", "Access denied")
    # Pre-4.1 shape, as some servers send before the handshake: no SQLSTATE marker.
    assert packets.parse_err(b"\xff\x10\x04Too many") == (1040, "HY000", "Too many")
    assert packets.is_err(payload)
    assert not packets.is_ok(payload)
    assert packets.is_ok(b"\x00\x00\x00\x02\x00\x00\x00")
    with pytest.raises(ProtocolError):
        packets.parse_err(b"\x00")
    with pytest.raises(ValueError, match="five"):
        packets.err_packet(1, "123", "x")


# Command tracker --------------------------------------------------------------------------


@given(st.lists(st.integers(0, 200), max_size=6))
def test_tracker_sees_a_query_whatever_the_split(cuts):
    stream = packets.encode_packet(0, b"\x03SELECT 1")
    tracker = CommandTracker()
    for chunk in _splits(stream, cuts):
        tracker.from_client(chunk)
    assert tracker.awaits_reply
    tracker.from_server()
    assert not tracker.awaits_reply


@given(st.lists(st.integers(0, 200), max_size=6))
def test_tracker_knows_commands_without_answers(cuts):
    # COM_QUERY, then COM_STMT_CLOSE (0x19): the last one needs no answer.
    stream = packets.encode_packet(0, b"\x03SELECT 1") + packets.encode_packet(
        0, b"\x19\x01\x00\x00\x00"
    )
    tracker = CommandTracker()
    for chunk in _splits(stream, cuts):
        tracker.from_client(chunk)
    assert not tracker.awaits_reply


def test_tracker_ignores_the_first_byte_of_a_continuation_packet():
    tracker = CommandTracker()
    tracker.from_client(packets.encode_packet(0, b"\x03" + b"\x19" * MAX_PAYLOAD))
    assert tracker.awaits_reply


def test_tracker_notes_the_clients_goodbye():
    tracker = CommandTracker()
    tracker.from_client(packets.encode_packet(0, b"\x03SELECT 1"))
    assert not tracker.has_quit
    tracker.from_client(packets.encode_packet(0, b"\x01"))
    assert tracker.has_quit


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_protocol_error(data):
    """A hostile client can make parsing fail only in the one way the server handles."""
    for parse in (packets.parse_handshake_response, packets.parse_greeting, packets.parse_err):
        with contextlib.suppress(ProtocolError):
            parse(data)


@given(st.binary(min_size=32, max_size=200), st.integers(0, 2**32 - 1))
def test_any_handshake_tail_parses_or_raises_protocol_error(tail, caps):
    payload = struct.pack("<IIB", caps | packets.CLIENT_PROTOCOL_41, 1 << 24, 33) + bytes(23)
    with contextlib.suppress(ProtocolError):
        packets.parse_handshake_response(payload + tail)
