"""Database-enforced masking as operators and attackers meet it, on the real PostgreSQL and
MariaDB, through the real `ssh` client: provisioning (`bastion db setup`, `--print`, `check`),
refusal while the views are missing or stale, one account per grant with only what the grant
allows, lookups, and accounts ended at revoke and at user removal."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from harness import (
    BastionProcess,
    World,
    account_names,
    control,
    control_json,
    free_port,
    grant_account,
    setup_databases,
    ssh_argv,
)
from sqldb import MASKING_RULES, MY_HOST, MY_PORT, PG_ADMIN, seeded_databases, target_toml

pytestmark = [pytest.mark.postgres, pytest.mark.mysql, pytest.mark.sshd]

USERS = {"alice": ["developer", "db-dev"], "erin": ["developer", "db-dev"],
         "bob": ["approver", "db-approver"], "dave": ["approver"], "carol": ["auditor"]}
ROLES = """
[[roles]]
name = "db-dev"
request = ["pg*", "my*"]
request_unmasked = ["pgdb", "mydb"]
[[roles]]
name = "db-approver"
approve = ["pg*", "my*"]
"""
ENGINES = [("postgres", "pgdb", "pgfresh"), ("mysql", "mydb", "myfresh")]


@pytest.fixture(scope="module")
def dbs() -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    first, second = seeded_databases(), seeded_databases()
    yield next(first), next(second)
    for gen in (first, second):
        for _ in gen:
            pass


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory,
            dbs: tuple[dict[str, str], dict[str, str]]) -> Iterator[BastionProcess]:
    db, fresh = dbs
    world = World(root=tmp_path_factory.mktemp("dbmask"), port=free_port(), users=dict(USERS))
    world.extra = "".join(
        target_toml(name, kind, f"127.0.0.1:{port}", data, MASKING_RULES)
        for name, kind, port, data in (("pgdb", "postgres", 5432, db), ("mydb", "mysql", MY_PORT, db),
                                       ("pgfresh", "postgres", 5432, fresh),
                                       ("myfresh", "mysql", MY_PORT, fresh))) + ROLES
    world.write_config()
    setup_databases(world, "pgdb", "mydb")
    proc = BastionProcess(world)
    proc.start()
    yield proc
    proc.stop()


def cert(bastion: BastionProcess, user: str, target: str, *flags: str) -> tuple[int, Path]:
    req = control_json(bastion, user, "request", target, "--reason", "INC-11: check", *flags)
    control_json(bastion, "bob", "approve", str(req["id"]))
    path = bastion.world.root / f"{user}-{target}-{req['id']}-cert.pub"
    path.write_text(control(bastion, user, "cert", str(req["id"])).stdout)
    return req["id"], path


def sql(bastion: BastionProcess, user: str, target: str, path: Path, text: str
        ) -> subprocess.CompletedProcess[str]:
    args = [*ssh_argv(bastion, bastion.world.key(user), target, cert=path), "--", text]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def db_cli(bastion: BastionProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion.cli", "db", *args, "--config",
                           str(bastion.world.config)], capture_output=True, text=True, timeout=60)


def admin(kind: str, db: dict[str, str], statement: str, params: tuple[Any, ...] = ()
          ) -> list[tuple[Any, ...]]:
    """Run a statement as the server's admin in the test database; return its rows."""
    if kind == "postgres":
        base, _, _ = PG_ADMIN.rpartition("/")
        with psycopg.connect(f"{base}/{db['name']}", autocommit=True) as conn:
            cur = conn.execute(statement, params or None)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
    conn = pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", database=db["name"],
                           autocommit=True)
    with conn, conn.cursor() as cur:
        cur.execute(statement, params or None)
        return [tuple(r) for r in cur.fetchall()]


def accounts(kind: str, db: dict[str, str]) -> dict[str, int]:
    """The grant accounts that exist, and how many connections each holds."""
    if kind == "postgres":
        rows = admin(kind, db, "SELECT r.rolname, count(a.pid) FROM pg_roles r LEFT JOIN "
                               "pg_stat_activity a ON a.usename = r.rolname "
                               "WHERE r.rolname LIKE 'bx\\_%%' GROUP BY r.rolname")
    else:
        rows = admin(kind, db, "SELECT u.user, (SELECT count(*) FROM information_schema.processlist p "
                               "WHERE p.user = u.user) FROM mysql.user u WHERE u.user LIKE 'bx\\_%%'")
    return {str(name): int(n) for name, n in rows}


def until(check: Callable[[], bool], seconds: float) -> float:
    """Wait until check() holds; return how long it took (fail after `seconds`)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, f"still not true after {seconds} s"
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.parametrize(("kind", "_", "target"), ENGINES)
def test_setup_print_check_and_refusal_until_provisioned(
        bastion: BastionProcess, dbs: tuple[dict[str, str], dict[str, str]], kind: str, _: str,
        target: str) -> None:
    fresh = dbs[1]
    check = db_cli(bastion, "check", target)
    assert check.returncode == 1 and "never set up" in check.stdout, check.stdout
    _, path = cert(bastion, "alice", target)
    refused = sql(bastion, "alice", target, path, "SELECT id FROM notes")
    assert refused.returncode == 1
    assert f"cannot open {target}" in refused.stderr and f"bastion db setup {target}" in refused.stderr
    printed = db_cli(bastion, "setup", target, "--print")
    assert printed.returncode == 0
    assert ("security_barrier" if kind == "postgres" else "SQL SECURITY DEFINER") in printed.stdout
    assert "CREATE" in printed.stdout and "customers" in printed.stdout
    assert db_cli(bastion, "check", target).returncode == 1  # --print applied nothing
    done = db_cli(bastion, "setup", target)
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr
    assert "ssn (partial)" in done.stdout and "email (hash)" in done.stdout
    assert db_cli(bastion, "check", target).returncode == 0
    shown = sql(bastion, "alice", target, path, "SELECT id, ssn, card_number FROM customers WHERE id = 1")
    assert shown.returncode == 0 and "*****6789" in shown.stdout and "****" in shown.stdout
    # Drift: a column added to a masked table is not in its view.
    admin(kind, fresh, "ALTER TABLE customers ADD COLUMN ssn_copy VARCHAR(20)")
    try:
        stale = db_cli(bastion, "check", target)
        assert stale.returncode == 1 and "do not match" in stale.stdout
        refused = sql(bastion, "alice", target, path, "SELECT 1")
        assert refused.returncode == 1 and f"bastion db setup {target}" in refused.stderr
        assert db_cli(bastion, "setup", target).returncode == 0
        assert sql(bastion, "alice", target, path, "SELECT ssn_copy FROM customers").returncode == 0
    finally:
        cascade = " CASCADE" if kind == "postgres" else ""  # the view that shows it goes too
        admin(kind, fresh, "ALTER TABLE customers DROP COLUMN ssn_copy" + cascade)
        assert db_cli(bastion, "setup", target).returncode == 0


@pytest.mark.parametrize(("kind", "target", "_"), ENGINES)
def test_a_masked_grant_reads_views_not_raw_columns_and_looks_people_up(
        bastion: BastionProcess, kind: str, target: str, _: str) -> None:
    _, path = cert(bastion, "alice", target)
    raw = "public.customers" if kind == "postgres" else f"{_database(bastion, target)}.customers"
    # Nothing of a raw masked table, not even its unmasked columns (a scan of those could follow
    # an index on a masked column; MariaDB's HANDLER reads whole rows with any column privilege).
    for attempt in (f"SELECT ssn FROM {raw}", f"SELECT * FROM {raw}", f"SELECT name FROM {raw}",
                    f"SELECT count(*) FROM {raw} WHERE ssn LIKE '1%'"):
        done = sql(bastion, "alice", target, path, attempt)
        assert done.returncode == 1 and "denied" in done.stderr, (attempt, done.stderr)
    plain = sql(bastion, "alice", target, path, "SELECT name FROM customers WHERE id = 3")
    assert "Grace Hopper" in plain.stdout  # the view shows the unmasked columns
    found = sql(bastion, "alice", target, path,
                "SELECT name, ssn FROM customers WHERE ssn = '123-45-6789'")
    assert "Ada Lovelace" in found.stdout and "*****6789" in found.stdout, found.stdout
    several = sql(bastion, "alice", target, path, "SELECT name FROM customers WHERE email IN "
                  "('grace@example.net', 'alan@example.org') ORDER BY name")
    assert "Alan Turing" in several.stdout and "Grace Hopper" in several.stdout
    everything = sql(bastion, "alice", target, path, "SELECT * FROM customers WHERE id = 1")
    assert "__lookup" not in everything.stdout and "prefers email" in everything.stdout


def _database(bastion: BastionProcess, target: str) -> str:
    text = bastion.world.config.read_text()
    block = text[text.index(f'name = "{target}"'):]
    return block.split('database = "', 1)[1].split('"', 1)[0]


@pytest.mark.parametrize(("kind", "target", "_"), ENGINES)
def test_unmasked_and_read_only_grants_get_what_they_allow(
        bastion: BastionProcess, dbs: tuple[dict[str, str], dict[str, str]], kind: str,
        target: str, _: str) -> None:
    request_id, path = cert(bastion, "alice", target, "--unmasked")
    raw = sql(bastion, "alice", target, path, "SELECT ssn FROM customers WHERE id = 1")
    assert "123-45-6789" in raw.stdout, raw.stdout + raw.stderr
    name = grant_account(bastion, "alice", request_id)
    if kind == "postgres":
        assert admin(kind, dbs[0], "SELECT has_column_privilege(%s, 'public.customers', 'ssn', "
                                   "'SELECT')", (name,)) == [(True,)]
    masked_id, _path = cert(bastion, "erin", target)
    sql(bastion, "erin", target, _path, "SELECT 1")
    masked = grant_account(bastion, "erin", masked_id)
    if kind == "postgres":
        rows = admin(kind, dbs[0], "SELECT has_column_privilege(%s, 'public.customers', 'ssn', "
                                   "'SELECT'), has_table_privilege(%s, 'bastion_masking.state', "
                                   "'SELECT'), rolcreaterole, rolsuper FROM pg_roles WHERE rolname = %s",
                     (masked, masked, masked))
        assert rows == [(False, False, False, False)]
    else:
        grants = admin(kind, dbs[0], f"SHOW GRANTS FOR '{masked}'@'%'")
        text = " ".join(str(g[0]) for g in grants)
        assert "`ssn`" not in text and "CREATE" not in text.replace("CREATE TEMPORARY", "")


def test_a_security_definer_function_or_public_view_refuses_masked_sessions(
        bastion: BastionProcess, dbs: tuple[dict[str, str], dict[str, str]]) -> None:
    db = dbs[0]
    _, path = cert(bastion, "alice", "pgdb")
    admin("postgres", db, "CREATE FUNCTION leaky() RETURNS text SECURITY DEFINER LANGUAGE sql "
                          "AS 'SELECT ssn FROM public.customers LIMIT 1'")
    try:
        refused = sql(bastion, "alice", "pgdb", path, "SELECT leaky()")
        assert refused.returncode == 1 and "SECURITY DEFINER function leaky()" in refused.stderr
        assert "123-45-6789" not in refused.stdout + refused.stderr
        admin("postgres", db, "REVOKE EXECUTE ON FUNCTION leaky() FROM PUBLIC")
        assert sql(bastion, "alice", "pgdb", path, "SELECT 1").returncode == 0
    finally:
        admin("postgres", db, "DROP FUNCTION leaky()")
    admin("postgres", db, "CREATE VIEW public.everyone AS SELECT id, ssn FROM public.customers")
    admin("postgres", db, "CREATE VIEW public.everyone2 AS SELECT * FROM public.everyone")
    admin("postgres", db, "GRANT SELECT ON public.everyone2 TO PUBLIC")
    try:
        refused = sql(bastion, "alice", "pgdb", path, "SELECT * FROM public.everyone2")
        assert refused.returncode == 1 and "public.everyone2" in refused.stderr, refused.stderr
        assert "123-45-6789" not in refused.stdout
    finally:
        admin("postgres", db, "DROP VIEW public.everyone2, public.everyone")


def test_each_grant_has_its_own_account_and_sees_no_other_statement(
        bastion: BastionProcess, dbs: tuple[dict[str, str], dict[str, str]]) -> None:
    _, erin = cert(bastion, "erin", "pgdb")
    _, alice = cert(bastion, "alice", "pgdb")
    slow = subprocess.Popen([*ssh_argv(bastion, bastion.world.key("erin"), "pgdb", cert=erin), "--",
                             "SELECT pg_sleep(8), 'erin-was-here' AS tag"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        mine = account_names(bastion).prefix
        until(lambda: any(n for a, n in accounts("postgres", dbs[0]).items()
                          if a.startswith(f"{mine}erin_")), 10)
        seen = sql(bastion, "alice", "pgdb", alice,
                   "SELECT usename, query FROM pg_stat_activity WHERE usename LIKE 'bx%'")
        assert f"{mine}erin_" in seen.stdout and f"{mine}alice_" in seen.stdout  # the logs name the person
        assert "erin-was-here" not in seen.stdout and "insufficient privilege" in seen.stdout
    finally:
        slow.kill()
        slow.communicate()


@pytest.mark.parametrize(("kind", "target", "_"), ENGINES)
def test_revoke_ends_the_account_and_its_connections_within_seconds(
        bastion: BastionProcess, dbs: tuple[dict[str, str], dict[str, str]], kind: str,
        target: str, _: str) -> None:
    request_id, path = cert(bastion, "alice", target)
    account = grant_account(bastion, "alice", request_id)
    sleep = "SELECT pg_sleep(60)" if kind == "postgres" else "SELECT SLEEP(60)"
    slow = subprocess.Popen([*ssh_argv(bastion, bastion.world.key("alice"), target, cert=path),
                             "--", sleep], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        until(lambda: accounts(kind, dbs[0]).get(account, 0) > 0, 10)
        control_json(bastion, "bob", "revoke", str(request_id), "--reason", "done")
        took = until(lambda: account not in accounts(kind, dbs[0]), 5)
        print(f"{kind}: account {account} and its connections gone {took:.2f} s after revoke")
        _, err = slow.communicate(timeout=10)
        assert "revoked" in err
    finally:
        slow.kill()


def test_removing_a_user_ends_their_accounts(bastion: BastionProcess,
                                             dbs: tuple[dict[str, str], dict[str, str]]) -> None:
    _, path = cert(bastion, "erin", "mydb")
    assert sql(bastion, "erin", "mydb", path, "SELECT 1").returncode == 0
    erin = f"{account_names(bastion).prefix}erin_"
    assert any(a.startswith(erin) for a in accounts("mysql", dbs[0]))
    world = bastion.world
    saved = dict(world.users)
    world.users.pop("erin")
    world.write_config()
    try:
        bastion.sighup()
        until(lambda: not any(a.startswith(erin) for a in accounts("mysql", dbs[0])), 10)
    finally:
        world.users.clear()
        world.users.update(saved)
        world.write_config()
        bastion.sighup()


def test_a_reload_that_changes_masking_updates_the_views(
        bastion: BastionProcess, dbs: tuple[dict[str, str], dict[str, str]]) -> None:
    _, path = cert(bastion, "alice", "pgdb")
    assert "Ada Lovelace" in sql(bastion, "alice", "pgdb", path,
                                 "SELECT name FROM customers WHERE id = 1").stdout
    world = bastion.world
    original = world.extra
    world.extra = original.replace('columns = ["*.customers.ssn"]',
                                   'columns = ["*.customers.ssn", "*.customers.name"]', 1)
    world.write_config()
    try:
        bastion.sighup()  # returns once the reload (views included) is done
        shown = sql(bastion, "alice", "pgdb", path, "SELECT name FROM customers WHERE id = 1")
        assert shown.returncode == 0 and "Ada Lovelace" not in shown.stdout, shown.stdout
        assert "*****lace" in shown.stdout
    finally:
        world.extra = original
        world.write_config()
        bastion.sighup()
        until(lambda: db_cli(bastion, "check", "pgdb").returncode == 0, 10)


def test_the_lookup_budget_survives_a_restart(bastion: BastionProcess) -> None:
    _, path = cert(bastion, "alice", "pgdb")
    values = ", ".join(f"'{i:03d}-00-0000'" for i in range(500))
    spent = sql(bastion, "alice", "pgdb", path, f"SELECT id FROM customers WHERE ssn IN ({values})")
    assert spent.returncode == 0, spent.stderr
    over = "SELECT name FROM customers WHERE ssn = '123-45-6789'"
    refused = sql(bastion, "alice", "pgdb", path, over)
    assert refused.returncode == 1 and "limit is 500 per grant" in refused.stderr
    bastion.stop()
    bastion.start()
    again = sql(bastion, "alice", "pgdb", path, over)
    assert again.returncode == 1 and "limit is 500 per grant" in again.stderr


@pytest.mark.parametrize(("kind", "target", "_"), ENGINES)
def test_harmless_statements_the_text_analysis_refused_now_run(
        bastion: BastionProcess, kind: str, target: str, _: str) -> None:
    _, path = cert(bastion, "alice", target)
    cases = [
        ("SELECT id, name FROM customers ORDER BY 1 DESC LIMIT 1", ["5", "Barbara Liskov"]),
        ("SELECT c.name, v.x FROM customers c JOIN (SELECT 1 AS id, 'first' AS x) v ON v.id = c.id",
         ["Ada Lovelace", "first"]),
        ("SELECT id, ssn IS NOT NULL AS has_ssn FROM customers WHERE id = 1",
         ["t" if kind == "postgres" else "1"]),
        ("SELECT CASE WHEN email IS NULL THEN 'none' ELSE 'some' END AS e FROM customers WHERE id = 1",
         ["some"]),
    ]
    if kind == "postgres":
        cases += [
            ("SELECT to_json(t) FROM (SELECT id, name FROM customers WHERE id = 2) t",
             ['"name": "Alan Turing"']),
            ("SELECT c.name, v.x FROM customers c JOIN (VALUES (3, 'third')) v(id, x) USING (id)",
             ["Grace Hopper", "third"]),
            ("SELECT generate_series(7, 9) AS n", ["7", "8", "9"]),
        ]
    for statement, wanted in cases:
        done = sql(bastion, "alice", target, path, statement)
        assert done.returncode == 0, (statement, done.stderr)
        for text in wanted:
            assert text in done.stdout, (statement, done.stdout)


def test_window_end_ends_the_account_and_its_connections(
        bastion: BastionProcess, dbs: tuple[dict[str, str], dict[str, str]]) -> None:
    request_id, path = cert(bastion, "erin", "pgdb", "--duration", "6s")
    account = grant_account(bastion, "erin", request_id)
    slow = subprocess.Popen([*ssh_argv(bastion, bastion.world.key("erin"), "pgdb", cert=path),
                             "--", "SELECT pg_sleep(60)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        until(lambda: accounts("postgres", dbs[0]).get(account, 0) > 0, 5)
        took = until(lambda: account not in accounts("postgres", dbs[0]), 15)
        print(f"account {account} gone {took:.1f} s after its session started (window 6 s)")
        _, err = slow.communicate(timeout=10)
        assert "window has ended" in err, err
    finally:
        slow.kill()


def test_a_grant_account_made_member_of_a_role_refuses_the_session(
        bastion: BastionProcess, dbs: tuple[dict[str, str], dict[str, str]]) -> None:
    """NOINHERIT does not stop SET ROLE: membership of any role (pg_read_all_data, say) fails."""
    request_id, path = cert(bastion, "alice", "pgdb")
    assert sql(bastion, "alice", "pgdb", path, "SELECT 1").returncode == 0
    account = grant_account(bastion, "alice", request_id)
    admin("postgres", dbs[0], f'GRANT pg_read_all_data TO "{account}"')
    refused = sql(bastion, "alice", "pgdb", path,
                  "SET ROLE pg_read_all_data; SELECT ssn FROM public.customers")
    assert refused.returncode == 1 and "member of role pg_read_all_data" in refused.stderr, refused.stderr
    assert "123-45-6789" not in refused.stdout


@pytest.mark.parametrize(("kind", "target", "_"), ENGINES)
def test_an_account_that_changes_its_own_password_is_ended(
        bastion: BastionProcess, dbs: tuple[dict[str, str], dict[str, str]], kind: str,
        target: str, _: str) -> None:
    """Both servers let an account change its own password; a user who does it to log in past
    the bastion loses the account within seconds."""
    request_id, path = cert(bastion, "alice", target)
    account = grant_account(bastion, "alice", request_id)
    change = ("ALTER ROLE CURRENT_USER PASSWORD 'mallory-knows'" if kind == "postgres"
              else "SET PASSWORD = PASSWORD('mallory-knows')")
    done = sql(bastion, "alice", target, path, change)
    assert done.returncode == 0, done.stderr
    took = until(lambda: account not in accounts(kind, dbs[0]), 10)
    print(f"{kind}: {account} ended {took:.1f} s after changing its own password")
    with pytest.raises((psycopg.OperationalError, pymysql.err.OperationalError)):
        if kind == "postgres":
            psycopg.connect(host="127.0.0.1", user=account, password="mallory-knows",
                            dbname=dbs[0]["name"], connect_timeout=5)
        else:
            pymysql.connect(host=MY_HOST, port=MY_PORT, user=account, password="mallory-knows",
                            connect_timeout=5)
    events = control_json(bastion, "carol", "audit", "--kind", "db.account_tampered")
    assert any(e["request_id"] == request_id for e in events), events
    again = sql(bastion, "alice", target, path, "SELECT 1 AS still_works")
    assert again.returncode == 0 and "still_works" in again.stdout  # the grant itself goes on


def test_mysql_connections_skip_tls_only_on_loopback() -> None:
    from bastion.sql.mysql import tls_options
    assert tls_options("127.0.0.1") == {"ssl_disabled": True}
    assert tls_options("localhost") == {"ssl_disabled": True}
    assert tls_options("db.internal.example") == {}  # PyMySQL's "preferred" TLS
    assert tls_options("10.0.0.7") == {}
