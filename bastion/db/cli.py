"""`bastion db setup TARGET` and `bastion db check TARGET`: provisioning the masked views."""

from __future__ import annotations

import argparse
from pathlib import Path

from bastion.errors import BastionError

__all__ = ["add_commands", "run"]


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `db setup` and `db check` to the command line."""
    db = sub.add_parser("db", help="provision and check database-enforced masking")
    actions = db.add_subparsers(dest="db_command", required=True)
    p = actions.add_parser("setup", help="create or update a SQL target's masked views")
    p.add_argument("target")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--print", action="store_true", dest="print_only",
                   help="print the SQL for a DBA to apply instead of applying it")
    p = actions.add_parser("check", help="verify a SQL target's masked views match the config")
    p.add_argument("target")
    p.add_argument("--config", required=True, type=Path)


def run(args: argparse.Namespace) -> int:
    """Run a `db` subcommand; the exit status is 1 when the target is not up to date."""
    from bastion.ca import load_or_create_secret
    from bastion.config import load_config
    from bastion.db.admin import admin_session
    from bastion.db.grants import setup_target, target_key
    from bastion.db.layout import provisioning_sql

    config = load_config(args.config)
    target = config.target(args.target)
    if target is None:
        raise BastionError(f"no target {args.target!r} in {args.config}")
    if target.kind == "ssh":
        raise BastionError(f"target {target.name} is an ssh target: only postgres and mysql "
                           "targets have masked views")
    key = load_or_create_secret(config.server.data_dir / "masking_key")
    if args.db_command == "setup" and args.print_only:
        with admin_session(target) as admin:
            layout = admin.layout()
        print(f"-- bastion: masked views for target {target.name} ({layout.dialect}, database "
              f"{layout.database}); apply as the views' owner. The state table holds the hash key.")
        for statement in provisioning_sql(layout, target_key(key, target)):
            print(statement + ";")
        return 0
    layout, problems = setup_target(target, key, apply=args.db_command == "setup")
    for masked in layout.masked:
        t = masked.table
        columns = ", ".join(f"{c} ({s})" for c, s in zip(t.columns, masked.strategies, strict=True)
                            if s)
        print(f"{target.name}: {layout.view_schema(t.schema)}.{t.name} masks {columns}")
    if not layout.masked:
        print(f"{target.name}: no column matches a masking rule; nothing to mask")
    for problem in problems:
        print(f"{target.name}: {problem}")
    if problems:
        print(f"{target.name}: NOT READY: masked sessions are refused; run "
              f"`bastion db setup {target.name} --config {args.config}`")
        return 1
    print(f"{target.name}: OK, the masked views match the config")
    return 0
