"""The MySQL protocol codec on its own: framing and continuations, length-encoded integers at
each boundary, the handshake both ways, the scrambles against PyMySQL's, and every decoder
fuzzed with random bytes (only ProtocolViolation may come out)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymysql._auth import scramble_caching_sha2, scramble_native_password

from bastion.wire.mysql import _Flag
from bastion.wire.mysql_protocol import (
    CONNECT_ATTRS,
    CONNECT_WITH_DB,
    DEPRECATE_EOF,
    MAX_PACKET,
    PLUGIN_AUTH,
    PLUGIN_AUTH_LENENC_DATA,
    PROTOCOL_41,
    SECURE_CONNECTION,
    SSL,
    Column,
    Framer,
    Handshake,
    ProtocolViolation,
    auth_switch,
    binary_row,
    build_err,
    build_handshake,
    build_ok,
    build_response,
    column_definition,
    encode_attributes,
    err_packet,
    lenenc_int,
    lenenc_str,
    native_scramble,
    ok_packet,
    packets,
    parse_handshake,
    parse_response,
    read_lenenc_int,
    read_lenenc_str,
    reseq,
    sha2_scramble,
    text_row,
)

SALT = bytes(range(65, 85))
CAPS = PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | CONNECT_WITH_DB | CONNECT_ATTRS


def test_scrambles_match_pymysql() -> None:
    for password in (b"secret", b"p\xc3\xa4ss w0rd", b"x" * 100):
        assert native_scramble(password, SALT) == scramble_native_password(password, SALT)
        assert sha2_scramble(password, SALT) == scramble_caching_sha2(password, SALT)
    assert native_scramble(b"", SALT) == b"" and sha2_scramble(b"", SALT) == b""


@pytest.mark.parametrize("n", [0, 1, 0xFA, 0xFB, 0xFC, 0xFFFF, 0x10000, 0xFFFFFF, 0x1000000,
                               2**64 - 1])
def test_lenenc_int_at_each_boundary(n: int) -> None:
    data = lenenc_int(n) + b"tail"
    assert read_lenenc_int(data, 0) == (n, len(data) - 4)


def test_lenenc_null_and_truncation() -> None:
    assert read_lenenc_int(b"\xfb", 0) == (None, 1)
    assert read_lenenc_str(lenenc_str(b"abc"), 0) == (b"abc", 4)
    for bad in (b"", b"\xfc\x01", b"\xfd\x01\x02", b"\xfe" + bytes(7), b"\xff", b"\x05abc"):
        with pytest.raises(ProtocolViolation):
            read_lenenc_str(bad, 0)


def test_framer_joins_reads_and_continuations() -> None:
    framer = Framer(limit=64 << 20)
    data = packets(b"\x03SELECT 1", 0) + packets(b"\x0e", 0)
    got = []
    for i in range(len(data)):  # one byte at a time
        framer.feed(data[i:i + 1])
        if (pkt := framer.next()) is not None:
            got.append(pkt)
    assert [(p.payload, p.seq, p.raw) for p in got] == [
        (b"\x03SELECT 1", 0, data[:13]), (b"\x0e", 0, data[13:])]
    assert framer.next() is None
    big = b"\x03" + b"x" * MAX_PACKET  # exactly 2^24-1+1 bytes: two packets
    framed = packets(big, 0)
    assert len(framed) == len(big) + 8
    framer.feed(framed)
    pkt = framer.next()
    assert pkt is not None and pkt.payload == big and (pkt.seq, pkt.last) == (0, 1)
    edge = b"y" * MAX_PACKET  # a multiple of 2^24-1 ends with an empty packet
    framer.feed(packets(edge, 5))
    pkt = framer.next()
    assert pkt is not None and pkt.payload == edge and pkt.last == 6


def test_framer_refuses_oversize_and_disorder() -> None:
    framer = Framer(limit=100)
    framer.feed(b"\xff\x00\x00\x00")
    with pytest.raises(ProtocolViolation):
        framer.next()
    framer = Framer(limit=1 << 26)
    framer.feed(b"\xff\xff\xff\x00" + bytes(MAX_PACKET) + b"\x01\x00\x00\x05x")
    with pytest.raises(ProtocolViolation, match="out of order"):
        framer.next()


def test_reseq_moves_every_header() -> None:
    data = packets(b"a", 1) + packets(b"bc", 2)
    assert reseq(data, 1) == packets(b"a", 2) + packets(b"bc", 3)


def test_handshake_round_trip() -> None:
    hs = Handshake("5.5.5-10.11.19-MariaDB", 77, SALT, CAPS | DEPRECATE_EOF, 45, 2,
                   "mysql_native_password")
    assert parse_handshake(build_handshake(hs)) == hs


def test_handshake_response_round_trip() -> None:
    attrs = {"program_name": "mariadb", "_client_name": "libmariadb"}
    for caps in (CAPS, CAPS | PLUGIN_AUTH_LENENC_DATA):
        data = build_response(caps, 1 << 24, 45, "alice", b"\x01" * 20, "shop",
                              "caching_sha2_password", encode_attributes(attrs))
        hello = parse_response(data)
        assert (hello.user, hello.auth, hello.database, hello.plugin) == \
            ("alice", b"\x01" * 20, "shop", "caching_sha2_password")
        assert hello.attributes == attrs and not hello.ssl_only
    ssl = parse_response((CAPS | SSL).to_bytes(4, "little") + bytes(28))
    assert ssl.ssl_only
    with pytest.raises(ProtocolViolation):
        parse_response(CAPS.to_bytes(4, "little") + bytes(28))


def test_ok_err_eof_and_auth_switch() -> None:
    ok = ok_packet(build_ok(status=0x000A, affected=300))
    assert (ok.affected, ok.status) == (300, 0x000A)
    eof = ok_packet(b"\xfe\x01\x00\x08\x00")
    assert (eof.warnings, eof.status) == (1, 8)
    err = err_packet(build_err(1142, "42000", "bastion: refused: no"))
    assert (err.code, err.state, err.message) == (1142, "42000", "bastion: refused: no")
    assert auth_switch(b"\xfemysql_native_password\x00" + SALT + b"\x00") == \
        ("mysql_native_password", SALT)


def test_column_definition_and_rows() -> None:
    definition = b"".join(lenenc_str(s) for s in (b"def", b"db", b"t", b"t", b"ssn", b"ssn"))
    definition += b"\x0c" + struct.pack("<HIBHB", 45, 80, 253, 0, 0) + b"\x00\x00"
    assert column_definition(definition) == Column("ssn", 253, 0, "t")
    assert text_row(lenenc_str(b"1") + b"\xfb" + lenenc_str("é".encode()), 3) == ["1", "NULL", "é"]
    columns = [Column("a", 3, 0), Column("b", 253, 0), Column("c", 12, 0), Column("d", 8, 0x20),
               Column("e", 5, 0), Column("f", 11, 0)]
    bitmap = bytes((0b00001000,))  # column b (index 1, bit 3) is NULL
    row = (b"\x00" + bitmap + struct.pack("<i", -7) + b"\x07" + struct.pack("<HBBBBB", 2024, 2,
           29, 13, 5, 9) + struct.pack("<Q", 2**64 - 1) + struct.pack("<d", 1.5)
           + b"\x08" + b"\x01" + struct.pack("<I", 1) + bytes((2, 3, 4)))
    assert binary_row(row, columns) == ["-7", "NULL", "2024-02-29 13:05:09",
                                        "18446744073709551615", "1.5", "-26:03:04"]


DECODERS: list[Callable[[bytes], Any]] = [
    parse_handshake, parse_response, ok_packet, err_packet, column_definition, auth_switch,
    lambda b: text_row(b, 3), lambda b: read_lenenc_str(b, 0),
    lambda b: binary_row(b, [Column("a", t, 0) for t in (1, 2, 3, 4, 5, 7, 8, 10, 11, 12, 253)]),
]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoders_fail_only_with_protocol_violation(data: bytes) -> None:
    for decode in DECODERS:
        try:
            decode(data)
        except ProtocolViolation:
            pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=20))
def test_framer_fuzzed(chunks: list[bytes]) -> None:
    framer = Framer(limit=1 << 20)
    try:
        for chunk in chunks:
            framer.feed(chunk)
            while framer.next() is not None:
                pass
    except ProtocolViolation:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 255))
def test_packets_round_trip(payload: bytes, seq: int) -> None:
    framer = Framer(limit=1 << 20)
    framer.feed(packets(payload, seq))
    pkt = framer.next()
    assert pkt is not None and pkt.payload == payload and pkt.seq == seq


async def test_the_relays_flag_wakes_its_one_waiter_and_remembers_a_set() -> None:
    """The MySQL relay's pump and serve tasks hand packets over with a one-waiter flag."""
    flag = _Flag()
    flag.set()
    await asyncio.wait_for(flag.wait(), 1)  # set before the wait: no waiting
    flag.clear()
    waiter = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0.01)
    assert not waiter.done()  # cleared: it waits
    with pytest.raises(RuntimeError, match="one waiter"):
        await flag.wait()
    flag.set()
    await asyncio.wait_for(waiter, 1)
    flag.clear()
    cancelled = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0.01)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    flag.set()  # a cancelled waiter is forgotten: setting afterwards is harmless
    await asyncio.wait_for(flag.wait(), 1)
