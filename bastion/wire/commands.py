"""How a user reaches a database target with their own client: the commands `cert` and `targets`
print for SQL targets."""

from __future__ import annotations

from bastion.config import BastionConfig, Target
from bastion.db.layout import MASKED_SUFFIX

__all__ = ["native_client_commands"]

_LOCAL_PORTS = {"postgres": (15432, 5432), "mysql": (13306, 3306)}


def native_client_commands(config: BastionConfig, request_id: int | None, target: Target,
                           *, unmasked: bool = False) -> list[str]:
    """The `ssh -L` and client commands for a SQL target (none for SSH targets). On MySQL a
    masked grant reads the masked views' own database (`<database>_masked`)."""
    if target.kind not in _LOCAL_PORTS:
        return []
    server = config.server
    local, remote = _LOCAL_PORTS[target.kind]
    cert = f" -o CertificateFile=~/.ssh/{target.name}-{request_id}-cert.pub" if request_id else ""
    bastion = f"{target.name}@{server.public_host}"
    database = target.database or ""
    if target.kind == "mysql" and target.masking and not unmasked:
        database += MASKED_SUFFIX
    if target.kind == "postgres":
        return [
            f"ssh -p {server.listen_port}{cert} -N -L {local}:{target.name}:{remote} {bastion}",
            f'psql "host=127.0.0.1 port={local} dbname={database}"   (no password is asked: '
            "the certificate is the login)",
            f"or a Unix socket only you can open: ssh -p {server.listen_port}{cert} -N -L "
            f"$HOME/.bastion/pg/.s.PGSQL.{remote}:{target.name}:{remote} {bastion}; "
            f"psql -h $HOME/.bastion/pg {database}",
        ]
    return [
        f"ssh -p {server.listen_port}{cert} -N -L {local}:{target.name}:{remote} {bastion}",
        f"mariadb -h 127.0.0.1 -P {local} --skip-ssl {database}   (any user name and password "
        "are accepted: the certificate is the login)",
    ]
