"""The SQL console's statement splitter, result rendering and editor pieces, without a terminal."""

from __future__ import annotations

import csv
import io
import json

import pytest

from bastion.console.prompt import statement_complete, submits
from bastion.console.render import ResultWriter, cell
from bastion.console.sql_session import parse_exec_options


def test_statement_complete_ignores_semicolons_in_quotes_and_comments() -> None:
    assert statement_complete("select 1;")
    assert statement_complete("select ';'\n;")
    assert not statement_complete("select ';")
    assert not statement_complete("select 1 -- ;")
    assert not statement_complete("select 'it''s")
    assert statement_complete("select 'it''s';  ")


def test_enter_runs_finished_statements_commands_and_empty_lines() -> None:
    assert submits("select 1;") and submits("\\dt") and submits("  ") and submits("")
    assert not submits("select 1") and not submits("select ';'")


def test_exec_options() -> None:
    assert parse_exec_options("--format csv select 1") == ("csv", "select 1")
    assert parse_exec_options("--json select 1") == ("json", "select 1")
    assert parse_exec_options("--format=tsv select 1") == ("tsv", "select 1")
    assert parse_exec_options("-- a comment\nselect 1") == ("table", "-- a comment\nselect 1")
    with pytest.raises(ValueError, match="--format must be one of table, expanded, csv"):
        parse_exec_options("--format xml select 1")


def test_table_fits_the_terminal_and_escapes_control_characters() -> None:
    writer = ResultWriter("table", ["id", "note"], width=30)
    text = writer.header() + writer.batch([(1, "x" * 100), (2, "evil\x1b]0;title\x07")])
    text += writer.footer("SELECT 2", 2, False, None)
    lines = text.splitlines()
    assert all(len(line) <= 30 for line in lines)
    assert "…" in text and "\x1b" not in text and "\\x1b" in text
    assert lines[-1] == "(2 rows)"


def test_csv_tsv_json_and_expanded() -> None:
    rows = [(1, "a,b", None), (2, 'q"uote', "z")]
    csv_writer = ResultWriter("csv", ["id", "name", "n"])
    assert csv_writer.header() + csv_writer.batch(rows) == 'id,name,n\n1,"a,b",NULL\n2,"q""uote",z\n'
    tsv = ResultWriter("tsv", ["id", "name", "n"])
    assert tsv.batch(rows).splitlines()[0] == "1\ta,b\tNULL"
    js = ResultWriter("json", ["id", "name", "n"])
    out = js.header() + js.batch(rows[:1]) + js.batch(rows[1:]) + js.footer("", 2, False, None)
    assert json.loads(out) == [{"id": 1, "name": "a,b", "n": None}, {"id": 2, "name": 'q"uote', "n": "z"}]
    ex = ResultWriter("expanded", ["id", "name"])
    assert "-[ RECORD 2 ]" in ex.batch([(1, "a"), (2, "b")])


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_delimited_batches_match_the_csv_module_byte_for_byte(fmt: str) -> None:
    """Batches with nothing to quote take a fast path: it must write what csv.writer writes."""
    delimiter = "," if fmt == "csv" else "\t"
    batches = [
        [(1, "Ada", "h:0123456789abcdef"), (2, "", None), (3, "Grace Hopper", b"\x01")],
        [(4, "a,b", "x"), (5, 'q"t', "y\tz")],  # something to quote: the csv module's path
        [("",), ("x",)],  # one column: csv.writer writes "" for an empty field
    ]
    for rows in batches:
        columns = [f"c{i}" for i in range(len(rows[0]))]
        got = ResultWriter(fmt, columns, crlf=True).batch(rows)
        buf = io.StringIO()
        texts = [[cell(v) for v in row] for row in rows]
        csv.writer(buf, delimiter=delimiter, lineterminator="\r\n").writerows(
            [[c.replace("\t", "\\x09") for c in row] for row in texts])
        assert got == buf.getvalue(), (rows, got)


def test_escape_sequences_never_reach_the_terminal_in_any_format() -> None:
    hostile = "x\x1b[2J\u009b31m\u202eevil"
    for fmt in ("table", "expanded", "csv", "tsv", "json"):
        writer = ResultWriter(fmt, [hostile, "b"])
        out = writer.header() + writer.batch([(hostile, "ok")]) + writer.footer("", 1, False, None)
        for raw in ("\x1b", "\u009b", "\u202e"):
            assert raw not in out, (fmt, out)
    as_json = ResultWriter("json", ["a"])
    text = as_json.header() + as_json.batch([(hostile,)]) + as_json.footer("", 1, False, None)
    assert json.loads(text) == [{"a": hostile}]  # escaped, still the same value
