"""JDBC through the bastion: Debian's PostgreSQL and MariaDB drivers, doing what DBeaver does on
connect (catalog metadata) and a prepared statement on a masked table, over `ssh -L`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import BastionProcess, World, control, free_port, setup_databases
from native import approved, tunnel
from sqldb import MASKING_RULES, MY_PORT, SECRETS, seeded_databases, target_toml

from bastion.demo_data import PEOPLE

pytestmark = [pytest.mark.postgres, pytest.mark.mysql, pytest.mark.sshd]

DRIVERS = {"postgres": "/usr/share/java/postgresql.jar",
           "mysql": "/usr/share/java/mariadb-java-client.jar"}
SOURCE = Path(__file__).parent / "java" / "NativeClient.java"
USERS = {"alice": ["developer", "db-dev"], "bob": ["approver", "db-approver"],
         "dave": ["approver"], "carol": ["auditor"]}
ROLES = """
[[roles]]
name = "db-dev"
request = ["pgdb", "mydb"]
[[roles]]
name = "db-approver"
approve = ["pgdb", "mydb"]
"""


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("java")
    subprocess.run(["javac", "-d", str(out), str(SOURCE)], check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BastionProcess, str]]:
    gen = seeded_databases()
    db = next(gen)
    world = World(root=tmp_path_factory.mktemp("jdbc"), port=free_port(), users=dict(USERS))
    world.extra = (target_toml("pgdb", "postgres", "127.0.0.1:5432", db, MASKING_RULES)
                   + target_toml("mydb", "mysql", f"127.0.0.1:{MY_PORT}", db, MASKING_RULES)
                   + ROLES)
    world.write_config()
    setup_databases(world, "pgdb", "mydb")
    proc = BastionProcess(world)
    proc.start()
    yield proc, db["name"]
    proc.stop()
    for _ in gen:
        pass


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_jdbc_metadata_and_prepared_statement(bastion: tuple[BastionProcess, str], classes: Path,
                                              kind: str) -> None:
    proc, database = bastion
    target, port = ("pgdb", 5432) if kind == "postgres" else ("mydb", 3306)
    request_id, cert = approved(proc, "alice", target)
    # The database the `cert` hint names: on MariaDB a masked grant reads <database>_masked.
    hint = control(proc, "alice", "cert", str(request_id)).stderr
    assert f"{database}_masked" in hint if kind == "mysql" else f"dbname={database}" in hint
    name = f"{database}_masked" if kind == "mysql" else database
    with tunnel(proc, "alice", target, cert, remote_port=port) as local:
        url = (f"jdbc:postgresql://127.0.0.1:{local}/{name}" if kind == "postgres"
               else f"jdbc:mariadb://127.0.0.1:{local}/{name}")
        result = subprocess.run(["java", "-cp", f"{classes}:{DRIVERS[kind]}", "NativeClient", url,
                                 "customers"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "table customers" in lines
    assert {"column id", "column ssn", "column email"} <= set(lines)
    rows = [line for line in lines if line.startswith("row ")]
    assert len(rows) == len(PEOPLE)
    assert rows[0].startswith(f"row 1|{PEOPLE[0][1]}|")
    assert not [v for v in SECRETS if v in result.stdout]
    assert any(line.startswith("refused ") and "bastion: refused" in line for line in lines)
    assert "after 42" in lines
