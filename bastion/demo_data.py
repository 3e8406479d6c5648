"""The demo's databases: `bastion_demo` on PostgreSQL and MariaDB/MySQL, seeded with fake people.

Each is set up only when its server is reachable (PostgreSQL: BASTION_DEMO_PG, default
postgresql://postgres@127.0.0.1:5432/postgres; MySQL: BASTION_DEMO_MYSQL, default
mysql://root@127.0.0.1:3306). The server's own admin account (postgres, root) is the target's
admin login: the bastion provisions the masked views with it and gives every approved grant an
account of its own; no session ever runs as the admin.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pymysql

__all__ = ["PEOPLE", "DemoDatabase", "seed_mysql", "seed_postgres"]

log = logging.getLogger("bastion.demo")

DATABASE = "bastion_demo"
PEOPLE = [
    (1, "Ada Lovelace", "ada@example.com", "123-45-6789", "4111111111111111", "prefers email"),
    (2, "Alan Turing", "alan@example.org", "234-56-7890", "5500005555555559", "VIP"),
    (3, "Grace Hopper", "grace@example.net", "345-67-8901", "340000000000009", ""),
    (4, "Edsger Dijkstra", "edsger@example.com", "456-78-9012", "6011000000000004", "no calls"),
    (5, "Barbara Liskov", "barbara@example.org", "567-89-0123", "3530111333300000", "renewal due"),
]
MASKED = {"email": "hash", "ssn": "partial", "card_number": "redact"}


@dataclass(frozen=True)
class DemoDatabase:
    """A seeded demo database and how the bastion reaches it."""

    target: str
    kind: str
    address: str
    database: str
    login: str
    password_file: Path | None


def seed_postgres(secrets_dir: Path) -> DemoDatabase | None:
    """Create and seed bastion_demo on PostgreSQL; None when the server is not reachable."""
    url = os.environ.get("BASTION_DEMO_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        admin = psycopg.connect(url, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        log.info("PostgreSQL not reachable (%s): no demo-pg target", type(exc).__name__)
        return None
    with admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            admin.execute(f"CREATE DATABASE {DATABASE}")
    parsed = urlparse(url)
    with psycopg.connect(parsed._replace(path=f"/{DATABASE}").geturl(), autocommit=True) as db:
        db.execute("DROP VIEW IF EXISTS customer_contacts")
        db.execute("DROP TABLE IF EXISTS orders, customers CASCADE")  # the masked views go too
        db.execute("""CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL,
                      email text, ssn text UNIQUE, card_number text, note text)""")
        db.execute("""CREATE TABLE orders (id serial PRIMARY KEY,
                      customer_id integer REFERENCES customers(id), total numeric(10,2))""")
        db.execute("CREATE VIEW customer_contacts AS SELECT id, name, email FROM customers")
        with db.cursor() as cur:
            cur.executemany("INSERT INTO customers VALUES (%s, %s, %s, %s, %s, %s)", PEOPLE)
            cur.executemany("INSERT INTO orders (customer_id, total) VALUES (%s, %s)",
                            [(p[0], 10 * p[0] + 0.5) for p in PEOPLE])
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 5432
    return DemoDatabase("demo-pg", "postgres", f"{host}:{port}", DATABASE,
                        parsed.username or "postgres",
                        _password(secrets_dir / "demo-pg.password", parsed.password))


def seed_mysql(secrets_dir: Path) -> DemoDatabase | None:
    """Create and seed bastion_demo on MariaDB/MySQL; None when the server is not reachable."""
    url = urlparse(os.environ.get("BASTION_DEMO_MYSQL", "mysql://root@127.0.0.1:3306"))
    host, port = url.hostname or "127.0.0.1", url.port or 3306
    try:
        admin = pymysql.connect(host=host, port=port, user=url.username or "root",
                                password=url.password or "", connect_timeout=3, autocommit=True)
    except pymysql.Error as exc:
        log.info("MySQL not reachable (%s): no demo-mysql target", type(exc).__name__)
        return None
    with admin, admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        cur.execute(f"USE {DATABASE}")
        cur.execute("DROP VIEW IF EXISTS customer_contacts")
        cur.execute("DROP TABLE IF EXISTS orders, customers")
        cur.execute("""CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL,
                       email VARCHAR(200), ssn VARCHAR(20) UNIQUE, card_number VARCHAR(30),
                       note VARCHAR(200))""")
        cur.execute("""CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, customer_id INT,
                       total DECIMAL(10,2), FOREIGN KEY (customer_id) REFERENCES customers(id))""")
        cur.execute("CREATE VIEW customer_contacts AS SELECT id, name, email FROM customers")
        cur.executemany("INSERT INTO customers VALUES (%s, %s, %s, %s, %s, %s)", PEOPLE)
        cur.executemany("INSERT INTO orders (customer_id, total) VALUES (%s, %s)",
                        [(p[0], 10 * p[0] + 0.5) for p in PEOPLE])
    return DemoDatabase("demo-mysql", "mysql", f"{host}:{port}", DATABASE, url.username or "root",
                        _password(secrets_dir / "demo-mysql.password", url.password))


def _password(path: Path, value: str | None) -> Path | None:
    """The admin password from the server's URL, kept in a 0600 file the config refers to
    (None: the server lets the admin in without one)."""
    if not value:
        return None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return path


def target_toml(db: DemoDatabase) -> str:
    """The [[targets]] entry for a seeded demo database."""
    rules = "\n".join(
        f'[[targets.masking]]\ncolumns = ["*.customers.{col}"]\nstrategy = "{strategy}"\n'
        for col, strategy in MASKED.items()
    )
    password = f'\npassword = {{ file = "{db.password_file}" }}' if db.password_file else ""
    return f"""
[[targets]]
name = "{db.target}"
kind = "{db.kind}"
description = "demo database {db.database}: customers with masked email, ssn and card_number"
address = "{db.address}"
database = "{db.database}"
login = "{db.login}"{password}
approvals_required = 1
blocked_statements = ["drop", "truncate", "alter", "grant", "revoke"]
max_rows = 10000
{rules}"""
