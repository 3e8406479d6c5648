"""SQL sessions through the bastion against psycopg / PyMySQL direct, measured in one run.

    .venv/bin/python bench/bench_sql.py [--rows 1000000] [--mysql-rows N] [--iterations 500]
                                        [--repeats 3] [--bulk-runs 1]

Needs the test databases (PostgreSQL 127.0.0.1:5432 as postgres, MariaDB 127.0.0.1:3306 as root);
a throwaway database is created on each (tests/sqldb.py) and dropped at the end. Nothing is
asserted; ratios are printed against the budgets of DESIGN.md §9:

1. `SELECT 1` round trips per second in an interactive console (asyncssh client with a PTY, in this
   process: write "SELECT 1;\\r", wait for the row count and the next prompt), against a loop of
   execute + fetchone with psycopg / PyMySQL directly, as the same unprivileged database user.
   Median of `--repeats` runs of `--iterations` round trips each (direct: 4 times as many), after
   a warm-up. The bastion's CPU time (/proc) and this process's are divided by the round trips.
2. A `--rows` result (table `big`: id, name, email, ssn, card_number, note) with email, ssn and
   card_number masked by the database's masked views (hash, partial, redact: the rules of
   tests/test_sql_sessions.py), fetched through the bastion in exec mode with the stock `ssh`
   client, `--csv`, output to /dev/null (wall time of the whole `ssh` run, login included),
   against the same query direct with fetchall, unmasked, on an open connection (after one
   warm-up fetch). Runs are interleaved; medians of `--bulk-runs`. The query log must show every
   row sent, and a few rows are checked masked.

The bastion's targets have no max_rows here (the tests' 1000 would cut the result).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
import pymysql  # noqa: E402
from harness import (  # noqa: E402
    BastionProcess,
    World,
    control,
    control_json,
    free_port,
    setup_databases,
    ssh_argv,
)
from sqldb import MY_HOST, MY_PORT, PG_ADMIN, seeded_databases  # noqa: E402
from test_sql_sessions import USERS, Screen, _console, sql_targets  # noqa: E402

ENGINES = {"pgdb": "PostgreSQL", "mydb": "MariaDB"}
COLUMNS = "id, name, email, ssn, card_number, note"
BIG = f"SELECT {COLUMNS} FROM big"
SCHEMA = ("CREATE TABLE big (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(200), "
          "ssn VARCHAR(20), card_number VARCHAR(30), note VARCHAR(200))")
PG_FILL = """
INSERT INTO big SELECT g, 'Person ' || g, 'user' || g || '@example.com',
       substr(lpad(g::text, 9, '0'), 1, 3) || '-' || substr(lpad(g::text, 9, '0'), 4, 2) || '-'
       || substr(lpad(g::text, 9, '0'), 6, 4),
       '4111' || lpad(g::text, 12, '0'), 'a note about customer ' || g
FROM generate_series(1, %s) AS g
"""
MY_FILL = """
INSERT INTO big SELECT seq, CONCAT('Person ', seq), CONCAT('user', seq, '@example.com'),
       CONCAT(SUBSTR(LPAD(seq, 9, '0'), 1, 3), '-', SUBSTR(LPAD(seq, 9, '0'), 4, 2), '-',
              SUBSTR(LPAD(seq, 9, '0'), 6, 4)),
       CONCAT('4111', LPAD(seq, 12, '0')), CONCAT('a note about customer ', seq)
FROM seq_1_to_{n}
"""


def create_big(db: dict[str, str], pg_rows: int, my_rows: int) -> dict[str, float]:
    """Create and fill `big` on both engines (as the admins); return the seconds each fill took."""
    name, took = db["name"], {}
    base, _, _ = PG_ADMIN.rpartition("/")
    with psycopg.connect(f"{base}/{name}", autocommit=True) as pg:
        pg.execute(SCHEMA)
        start = time.perf_counter()
        pg.execute(PG_FILL, (pg_rows,))
        pg.execute("VACUUM ANALYZE big")  # hint bits and visibility map set before anyone reads
        took["pgdb"] = time.perf_counter() - start
        pg.execute(f"GRANT SELECT ON big TO {name}")
    my = pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", database=name, autocommit=True)
    with my, my.cursor() as cur:
        cur.execute(SCHEMA)
        start = time.perf_counter()
        cur.execute(MY_FILL.format(n=int(my_rows)))
        took["mydb"] = time.perf_counter() - start
    return took


def connect_direct(target: str, db: dict[str, str]) -> Any:
    """A direct connection as the bastion's own unprivileged login, autocommit like the bastion's."""
    if target == "pgdb":
        return psycopg.connect(host="127.0.0.1", port=5432, user=db["name"], password=db["password"],
                               dbname=db["name"], autocommit=True)
    return pymysql.connect(host=MY_HOST, port=MY_PORT, user=db["name"], password=db["password"],
                           database=db["name"], autocommit=True)


def direct_select1(conn: Any, n: int) -> float:
    """`SELECT 1` round trips per second: execute + fetchone in a loop."""
    cur = conn.cursor()
    start = time.perf_counter()
    for _ in range(n):
        cur.execute("SELECT 1")
        cur.fetchone()
    return n / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def console_select1(bastion: BastionProcess, cert: Path, target: str, iterations: int,
                          repeats: int) -> list[tuple[float, float, float]]:
    """`SELECT 1` through a console session: per repeat, round trips per second and the CPU
    milliseconds per round trip of the bastion and of this (client) process."""
    conn, proc = await _console(bastion, cert, target)
    screen = Screen(proc)
    prompt = f"{target}=> "
    assert bastion.proc is not None
    pid = bastion.proc.pid

    async def loop(n: int) -> tuple[float, float, float]:
        cpu, mine, start = cpu_seconds(pid), time.process_time(), time.perf_counter()
        for _ in range(n):
            proc.stdin.write("SELECT 1;\r")
            await screen.expect("(1 row)")
            await screen.expect(prompt)
            screen.seen, screen.pos = screen.seen[screen.pos:], 0  # keep the scan short
        took = time.perf_counter() - start
        return (n / took, (cpu_seconds(pid) - cpu) * 1000 / n, (time.process_time() - mine) * 1000 / n)

    async with conn:
        await screen.expect(prompt)
        await loop(max(20, iterations // 10))  # warm-up
        runs = [await loop(iterations) for _ in range(repeats)]
        proc.stdin.write("\\q\r")
        await proc.wait_closed()
    return runs


def direct_bulk(conn: Any, rows: int) -> float:
    """Rows per second of the big query with fetchall, unmasked."""
    start = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(BIG)
        got = len(cur.fetchall())
    took = time.perf_counter() - start
    if got != rows:
        raise SystemExit(f"direct fetch returned {got} rows, not {rows}")
    return rows / took


def bastion_exec(bastion: BastionProcess, cert: Path, target: str, sql: str,
                 stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """`ssh TARGET@bastion -- SQL` with the stock OpenSSH client."""
    args = [*ssh_argv(bastion, bastion.world.key("alice"), target, cert=cert), "--", sql]
    result = subprocess.run(args, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"{target}: {sql[:60]!r} failed: {result.stderr}")
    return result


def bastion_bulk(bastion: BastionProcess, cert: Path, target: str, rows: int) -> tuple[float, float]:
    """Rows per second of the big query through the bastion, `--csv`, output to /dev/null, and
    the bastion's CPU seconds for it."""
    assert bastion.proc is not None
    cpu, start = cpu_seconds(bastion.proc.pid), time.perf_counter()
    bastion_exec(bastion, cert, target, f"--csv {BIG}", stdout=subprocess.DEVNULL)
    return rows / (time.perf_counter() - start), cpu_seconds(bastion.proc.pid) - cpu


def check_masking(bastion: BastionProcess, cert: Path, target: str) -> None:
    """The bulk query really is masked: look at a few rows of it as the user sees them."""
    out = bastion_exec(bastion, cert, target, f"--csv {BIG} WHERE id <= 3 ORDER BY id").stdout
    lines = out.splitlines()
    if lines[0] != COLUMNS.replace(" ", "") or len(lines) != 4:
        raise SystemExit(f"{target}: unexpected output {out!r}")
    for line in lines[1:]:
        _, _, email, ssn, card, _ = line.split(",")
        if not (email.startswith("h:") and ssn.startswith("*****") and card == "****"):
            raise SystemExit(f"{target}: not masked as expected: {line!r}")


def logged_rows(bastion: BastionProcess, target: str) -> list[int]:
    """Row counts the query log holds for the big query on a target (auditor's view)."""
    logged = control_json(bastion, "carol", "queries", "--limit", "100")
    return [q["rows"] for q in logged if q["target"] == target and q["statement"].strip() == BIG]


def row(label: str, *cells: str) -> str:
    return f"{label:<60}" + "".join(f"{c:>14}" for c in cells)


def measure(bastion: BastionProcess, certs: dict[str, Path], db: dict[str, str], target: str,
            rows: int, args: argparse.Namespace) -> dict[str, float]:
    """Both measurements on one engine; medians."""
    check_masking(bastion, certs[target], target)
    with connect_direct(target, db) as conn:
        direct_select1(conn, args.iterations)  # warm-up
        direct = [direct_select1(conn, args.iterations * 4) for _ in range(args.repeats)]
        console = asyncio.run(console_select1(bastion, certs[target], target, args.iterations,
                                              args.repeats))
        print(f"{target}: SELECT 1/s direct {[round(r) for r in direct]}, "
              f"console {[round(r[0]) for r in console]}", flush=True)
        direct_bulk(conn, rows)  # warm-up (cache)
        d_bulk, b_bulk, b_cpu = [], [], []
        for _ in range(args.bulk_runs):  # interleaved, so drift hits both alike
            d_bulk.append(direct_bulk(conn, rows))
            rate, cpu = bastion_bulk(bastion, certs[target], target, rows)
            b_bulk.append(rate)
            b_cpu.append(cpu)
    print(f"{target}: rows/s direct {[round(r) for r in d_bulk]}, "
          f"bastion {[round(r) for r in b_bulk]}", flush=True)
    counts = logged_rows(bastion, target)  # the bastion really sent every row
    if counts[: args.bulk_runs] != [rows] * args.bulk_runs:
        raise SystemExit(f"{target}: the query log shows row counts {counts}")
    med = statistics.median
    return {"direct1": med(direct), "console1": med(r[0] for r in console),
            "cpu1": med(r[1] for r in console), "client1": med(r[2] for r in console),
            "dbulk": med(d_bulk), "bbulk": med(b_bulk), "bcpu": med(b_cpu) * 1e6 / rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the big result")
    parser.add_argument("--mysql-rows", type=int, default=None,
                        help="rows of the big result on MariaDB (default: --rows)")
    parser.add_argument("--iterations", type=int, default=500, help="console SELECT 1 round trips "
                        "per run (direct runs do 4 times as many)")
    parser.add_argument("--repeats", type=int, default=3, help="SELECT 1 runs (median)")
    parser.add_argument("--bulk-runs", type=int, default=1, help="big-result runs (median)")
    args = parser.parse_args()
    rows = {"pgdb": args.rows, "mydb": args.mysql_rows or args.rows}
    with tempfile.TemporaryDirectory() as tmp, \
            contextlib.contextmanager(seeded_databases)() as db:
        took = create_big(db, rows["pgdb"], rows["mydb"])
        print(f"filled big: PostgreSQL {rows['pgdb']:,} rows in {took['pgdb']:.1f} s, "
              f"MariaDB {rows['mydb']:,} rows in {took['mydb']:.1f} s", flush=True)
        world = World(root=Path(tmp) / "bastion", port=free_port(), users=dict(USERS))
        targets = sql_targets(db, 5432).replace("max_rows = 1000\n", "")
        # The tests' masking rules, applied to `big` as well as `customers`.
        world.extra = re.sub(r'\["\*\.customers\.(\w+)"\]', r'["*.customers.\1", "*.big.\1"]', targets)
        world.write_config()
        setup_databases(world, "pgdb", "mydb")  # the masked views of customers and big
        bastion = BastionProcess(world)
        bastion.start()
        assert bastion.proc is not None
        print(f"bastion pid {bastion.proc.pid}", flush=True)
        try:
            certs = {}
            for target in ENGINES:
                req = control_json(bastion, "alice", "request", target, "--reason", "bench")
                control_json(bastion, "bob", "approve", str(req["id"]))
                certs[target] = Path(tmp) / f"alice-{target}-cert.pub"
                certs[target].write_text(control(bastion, "alice", "cert", str(req["id"])).stdout)
            results = {t: measure(bastion, certs, db, t, rows[t], args) for t in ENGINES}
        finally:
            bastion.stop()
    pg, my = results["pgdb"], results["mydb"]
    print()
    print(row("", "PostgreSQL", "MariaDB"))
    print(row("SELECT 1 round trips/s, direct (psycopg / PyMySQL)",
              f"{pg['direct1']:,.0f}", f"{my['direct1']:,.0f}"))
    print(row("SELECT 1 round trips/s, console through the bastion",
              f"{pg['console1']:,.0f}", f"{my['console1']:,.0f}"))
    print(row("  ratio (goal >= 0.66x)", f"{pg['console1'] / pg['direct1']:.3f}x",
              f"{my['console1'] / my['direct1']:.3f}x"))
    print(row("  bastion CPU per console SELECT 1", f"{pg['cpu1']:.2f} ms", f"{my['cpu1']:.2f} ms"))
    print(row("  client (asyncssh, this process) CPU per SELECT 1", f"{pg['client1']:.2f} ms",
              f"{my['client1']:.2f} ms"))
    print(row("rows in the big result", f"{rows['pgdb']:,}", f"{rows['mydb']:,}"))
    print(row("rows/s, direct fetchall, unmasked", f"{pg['dbulk']:,.0f}", f"{my['dbulk']:,.0f}"))
    print(row("rows/s, bastion exec --csv > /dev/null, 3 columns masked",
              f"{pg['bbulk']:,.0f}", f"{my['bbulk']:,.0f}"))
    print(row("  ratio (goal >= 0.5x)", f"{pg['bbulk'] / pg['dbulk']:.3f}x",
              f"{my['bbulk'] / my['dbulk']:.3f}x"))
    print(row("  bastion CPU per row", f"{pg['bcpu']:.1f} us", f"{my['bcpu']:.1f} us"))


if __name__ == "__main__":
    main()
