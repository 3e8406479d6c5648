"""Throwaway databases on the real PostgreSQL and MariaDB, seeded with the demo's fake people,
and the leak check every SQL test runs over what a user or an auditor could see."""

from __future__ import annotations

import base64
import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
import pymysql

from bastion.demo_data import PEOPLE

PG_ADMIN = os.environ.get("BASTION_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MY_HOST, MY_PORT = "127.0.0.1", int(os.environ.get("BASTION_TEST_MYSQL_PORT", "3306"))
SECRETS = [p[3] for p in PEOPLE] + [p[4] for p in PEOPLE] + [p[2] for p in PEOPLE]
TABLES = """
CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(200),
                        ssn VARCHAR(20) UNIQUE, card_number VARCHAR(30), note VARCHAR(200));
CREATE TABLE notes (id INT PRIMARY KEY, body VARCHAR(200));
CREATE VIEW customer_view AS SELECT id, name, ssn AS tax_id, upper(email) AS mail FROM customers
"""
PG_FUNCTION = "CREATE FUNCTION peek() RETURNS text LANGUAGE sql AS 'SELECT ssn FROM customers LIMIT 1'"
MY_FUNCTION = ("CREATE FUNCTION peek() RETURNS VARCHAR(20) READS SQL DATA "
               "RETURN (SELECT ssn FROM customers LIMIT 1)")


# The masking rules of the SQL tests: partial SSN, redacted card number, hashed e-mail.
MASKING_RULES = """
[[targets.masking]]
columns = ["*.customers.ssn"]
strategy = "partial"
[[targets.masking]]
columns = ["*.customers.card_number"]
strategy = "redact"
[[targets.masking]]
columns = ["*.customers.email"]
strategy = "hash"
"""


def target_toml(name: str, kind: str, address: str, db: dict[str, str], extra: str = "") -> str:
    """A [[targets]] entry for a seeded database; the bastion's admin account is the server's
    own (postgres, root: no password on the test servers), and sessions use grant accounts."""
    login = "postgres" if kind == "postgres" else "root"
    return f"""
[[targets]]
name = "{name}"
kind = "{kind}"
address = "{address}"
database = "{db['name']}"
login = "{login}"
approvals_required = 1
{extra}
"""


def encodings(value: str) -> set[str]:
    """A value and its obvious encodings, as an attacker would try to smuggle it out."""
    raw = value.encode()
    digits = "".join(ch for ch in value if ch.isdigit())
    found = {value, value.upper(), value.lower(), value[::-1], raw.hex(), raw.hex().upper(),
             base64.b64encode(raw).decode().rstrip("=")}
    if len(digits) >= 9:
        found.add(digits)
    return found


def assert_no_secrets(text: str, where: str) -> None:
    """Fail if text holds any seeded sensitive value in any of its obvious encodings."""
    for secret in SECRETS:
        for form in encodings(secret):
            assert form not in text, f"{where} leaks {secret!r} as {form!r}"


def seeded_databases() -> Iterator[dict[str, str]]:
    """A fresh database on each engine, seeded, with an unprivileged account for the bastion."""
    name = f"bastion_sql_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    admin = psycopg.connect(PG_ADMIN, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    base, _, _ = PG_ADMIN.rpartition("/")
    with psycopg.connect(f"{base}/{name}", autocommit=True) as db:
        for statement in TABLES.split(";"):
            db.execute(statement)
        db.execute(PG_FUNCTION)
        with db.cursor() as cur:
            cur.executemany("INSERT INTO customers VALUES (%s, %s, %s, %s, %s, %s)", PEOPLE)
        db.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON customers, notes, customer_view TO {name}")
        db.execute(f"GRANT CREATE ON SCHEMA public TO {name}")
    my = pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", autocommit=True)
    with my.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
        cur.execute(f"USE {name}")
        for statement in TABLES.split(";"):
            cur.execute(statement)
        cur.execute(MY_FUNCTION)
        cur.executemany("INSERT INTO customers VALUES (%s, %s, %s, %s, %s, %s)", PEOPLE)
        cur.execute(f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY %s", (password,))
        cur.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, CREATE VIEW, SHOW VIEW, EXECUTE "
                    f"ON {name}.* TO '{name}'@'127.0.0.1'")
    try:
        yield {"name": name, "password": password}
    finally:
        # Only the grant accounts that were given this test's databases: tests of other
        # bastions (other installations) run at the same time on the same servers.
        with my.cursor() as cur:
            cur.execute("SELECT User FROM mysql.db WHERE Db IN (%s, %s) AND Host = '%%' "
                        "UNION SELECT User FROM mysql.tables_priv WHERE Db IN (%s, %s) AND Host = '%%'",
                        (name, f"{name}_masked", name, f"{name}_masked"))
            grantees = [str(account) for (account,) in cur.fetchall()]
            cur.execute(f"DROP DATABASE {name}")
            cur.execute(f"DROP DATABASE IF EXISTS {name}_masked")
            cur.execute(f"DROP USER '{name}'@'127.0.0.1'")
            for account in grantees:
                if account.startswith("bx_"):
                    cur.execute(f"DROP USER IF EXISTS '{account}'@'%'")
        my.close()
        roles = admin.execute(
            "SELECT DISTINCT a.grantee::regrole::text FROM pg_database d, aclexplode(d.datacl) a "
            "WHERE d.datname = %s", (name,)).fetchall()
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.execute(f"DROP ROLE {name}")
        for (account,) in roles:
            account = account.strip('"')
            if account.startswith("bx_"):
                with contextlib.suppress(psycopg.Error):  # still holds privileges elsewhere
                    admin.execute(f'DROP ROLE "{account}"')
        admin.close()
