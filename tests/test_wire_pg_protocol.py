"""The PostgreSQL protocol codec on its own: framing, start-up packets, SCRAM against RFC 7677's
example, and every decoder fuzzed with random bytes (only ProtocolViolation may come out)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.wire.pg_login import ScramClient
from bastion.wire.pg_protocol import (
    CANCEL_REQUEST,
    SSL_REQUEST,
    ProtocolViolation,
    Startup,
    build_error,
    build_parse,
    cancel_packet,
    command_rows,
    data_rows,
    error_fields,
    message,
    parse_bind,
    parse_data_row,
    parse_execute,
    parse_parse,
    parse_row_description,
    parse_startup,
    parse_target,
    split_messages,
    startup_packet,
)

DECODERS = [parse_startup, parse_parse, parse_bind, parse_target, parse_execute,
            parse_row_description, parse_data_row, error_fields]


def test_startup_round_trip_and_requests() -> None:
    packet = startup_packet({"user": "alice", "database": "db", "application_name": "psql"})
    code, startup = parse_startup(packet[4:])
    assert isinstance(startup, Startup) and (startup.major, startup.minor) == (3, 0)
    assert startup.params == {"user": "alice", "database": "db", "application_name": "psql"}
    assert parse_startup(SSL_REQUEST.to_bytes(4, "big"))[0] == SSL_REQUEST
    code, cancel = parse_startup(cancel_packet(4242, b"\x01\x02\x03\x04")[4:])
    assert code == CANCEL_REQUEST and cancel == (4242, b"\x01\x02\x03\x04")


@pytest.mark.parametrize("body", [
    b"", b"\x00\x02\x00\x00user\x00a\x00\x00",  # protocol 2
    b"\x00\x03\x00\x00user\x00",  # no terminator
    b"\x00\x03\x00\x00user\x00a\x00user\x00b\x00\x00",  # repeated
    b"\x00\x03\x00\x00user\x00\x00",  # a name without a value
])
def test_malformed_startup_is_a_violation(body: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        parse_startup(body)


def test_messages_split_across_reads() -> None:
    stream = message(b"Q", b"SELECT 1\x00") + build_parse("s1", "SELECT $1", [23]) + message(b"S")
    for cut in range(len(stream) + 1):
        first = list(split_messages(stream[:cut]))
        consumed = first[-1][2] if first else 0
        rest = list(split_messages(stream, consumed))
        assert [t for t, _, _ in first + rest] == [ord("Q"), ord("P"), ord("S")]
    assert parse_parse(build_parse("s1", "SELECT $1", [23])[5:]) == ("s1", "SELECT $1", [23])


def test_data_rows_are_counted_up_to_the_first_other_or_partial_message() -> None:
    row = message(b"D", b"\x00\x01\x00\x00\x00\x011")
    done = message(b"C", b"SELECT 3\x00")
    stream = bytearray(row * 3 + done + row)
    assert data_rows(stream, 0, 100) == (3, len(row) * 3)
    assert data_rows(stream, 0, 2) == (2, len(row) * 2)  # max_rows: at most this many
    assert data_rows(stream, len(row) * 3, 100) == (0, len(row) * 3)  # not a DataRow
    cut = bytearray(row * 2 + row[:-1])
    assert data_rows(cut, 0, 100) == (2, len(row) * 2)  # the third is not whole yet
    bad = bytearray(row + b"D" + (3).to_bytes(4, "big") + b"xxxx")
    assert data_rows(bad, 0, 100) == (1, len(row))  # left to split_messages, which refuses it
    with pytest.raises(ProtocolViolation):
        list(split_messages(bad, len(row)))


@pytest.mark.parametrize("length", [0, 3, (1 << 30) + 1, 0x7FFFFFFF])
def test_impossible_lengths_are_violations(length: int) -> None:
    with pytest.raises(ProtocolViolation):
        list(split_messages(b"Q" + length.to_bytes(4, "big") + b"x" * 8))


def test_error_fields_round_trip_and_command_rows() -> None:
    fields = [("S", "ERROR"), ("C", "42501"), ("M", "permission denied")]
    assert error_fields(build_error(fields)[5:]) == fields
    assert command_rows("SELECT 3") == 3 and command_rows("INSERT 0 5") == 5
    assert command_rows("BEGIN") is None


def test_scram_matches_rfc_7677() -> None:
    client = ScramClient("pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    client.first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = client.final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                         b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoders_only_raise_protocol_violations(data: bytes) -> None:
    for decode in DECODERS:
        try:
            decode(data)  # type: ignore[operator]
        except ProtocolViolation:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_framing_only_raises_protocol_violations(data: bytes) -> None:
    try:
        for tag, start, end in split_messages(data):
            assert 0 <= start <= end <= len(data) and isinstance(tag, int)
    except ProtocolViolation:
        pass
