"""The bastion's TOML config, loaded into frozen, validated objects.

A bad config is refused as a whole with `ConfigError(file, key, problem)`; nothing half-loaded
ever runs. See config.example.toml for every key with comments.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from bastion.cluster.settings import ClusterConfig, parse_cluster
from bastion.config_table import ConfigTable
from bastion.config_table import secret_ref as _secret_ref
from bastion.errors import ConfigError
from bastion.identity.settings import IdentitySettings, parse_identity
from bastion.notify import Webhook
from bastion.secrets import SecretRef

__all__ = [
    "CONTROL_USER",
    "BastionConfig",
    "CertificatesConfig",
    "MaskingRule",
    "RecordingsConfig",
    "Role",
    "ServerConfig",
    "Target",
    "User",
    "load_config",
    "parse_config",
]

log = logging.getLogger("bastion.config")

CONTROL_USER = "access"
TARGET_KINDS = ("ssh", "postgres", "mysql")
TRANSFER_DIRECTIONS = {"download": frozenset({"download"}), "upload": frozenset({"upload"}),
                       "both": frozenset({"download", "upload"})}
DEFAULT_MAX_FILE_SIZE = 1 << 30
DEFAULT_MAX_TRANSFER_SIZE = 4 << 30
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
MASK_STRATEGIES = ("redact", "partial", "hash", "null")
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
T = TypeVar("T")


@dataclass(frozen=True)
class ServerConfig:
    """The `[server]` table."""

    listen_host: str
    listen_port: int
    public_host: str
    data_dir: Path
    state_store: str
    host_key: Path
    audit_log: Path
    bastion_id: str
    pending_request_ttl: timedelta
    log_level: str
    idle_timeout: float | None = None


@dataclass(frozen=True)
class CertificatesConfig:
    """The `[certificates]` table: the two CAs and certificate lifetimes."""

    user_ca_key: Path
    upstream_ca_key: Path
    default_ttl: timedelta
    max_ttl: timedelta


@dataclass(frozen=True)
class RecordingsConfig:
    """The `[recordings]` table."""

    dir: Path
    auditor_keys: tuple[Path, ...]
    signing_key: Path
    on_failure: str


@dataclass(frozen=True)
class User:
    """A person who may log in, with their roles and registered public keys."""

    name: str
    roles: tuple[str, ...]
    public_keys: tuple[str, ...]
    expires: datetime | None = None

    def expired(self, now: datetime) -> bool:
        """Return whether a contractor's account has passed its `expires` date."""
        return self.expires is not None and now >= self.expires

    def holds(self, key: asyncssh.SSHKey) -> bool:
        """Whether `key` is one of this user's registered public keys."""
        wanted = key.public_data
        return any(asyncssh.import_public_key(text).public_data == wanted for text in self.public_keys)


@dataclass(frozen=True)
class Role:
    """What a role may do: target name patterns it may request, approve and audit."""

    name: str
    request: tuple[str, ...] = ()
    approve: tuple[str, ...] = ()
    audit: tuple[str, ...] = ()
    request_unmasked: tuple[str, ...] = ()
    max_duration: timedelta | None = None
    port_forwarding: bool = False
    forward_to: tuple[str, ...] = ()  # "host:port" patterns a forwarded channel may reach
    file_transfer: frozenset[str] = frozenset()  # "download", "upload" through the bastion's SFTP

    def may(self, action: str, target: str) -> bool:
        """Whether this role grants `action` (request, approve, audit, request_unmasked) on `target`."""
        patterns: tuple[str, ...] = getattr(self, action)
        return any(fnmatch.fnmatchcase(target, pattern) for pattern in patterns)


@dataclass(frozen=True)
class MaskingRule:
    """Columns (`schema.table.column`, wildcards allowed) and how to mask them."""

    columns: tuple[str, ...]
    strategy: str


@dataclass(frozen=True)
class Target:
    """Something users reach through the bastion: an SSH host or a database."""

    name: str
    kind: str
    address: str
    login: str
    approvals_required: int
    description: str = ""
    host_key: str | None = None
    known_hosts: Path | None = None
    database: str | None = None
    password: SecretRef | None = None
    masking: tuple[MaskingRule, ...] = ()
    read_only: bool = False
    blocked_statements: tuple[str, ...] = ()
    max_rows: int | None = None
    file_transfer: frozenset[str] = frozenset()  # what the target allows; roles grant it too
    max_file_size: int = DEFAULT_MAX_FILE_SIZE  # bytes of one file, in one direction
    max_transfer_size: int = DEFAULT_MAX_TRANSFER_SIZE  # bytes of all files of one session

    @property
    def host(self) -> str:
        """Host part of the address."""
        return self.address.rpartition(":")[0] or self.address

    @property
    def port(self) -> int:
        """Port part of the address, or the kind's default port."""
        host, _, port = self.address.rpartition(":")
        if host and port.isdigit():
            return int(port)
        return {"ssh": 22, "postgres": 5432, "mysql": 3306}[self.kind]


@dataclass(frozen=True)
class BastionConfig:
    """The whole config, validated."""

    path: Path
    server: ServerConfig
    certificates: CertificatesConfig
    recordings: RecordingsConfig
    users: tuple[User, ...]
    roles: tuple[Role, ...]
    targets: tuple[Target, ...]
    webhooks: tuple[Webhook, ...] = ()
    cluster: ClusterConfig | None = None
    identity: IdentitySettings | None = None  # people signing in through an OpenID provider

    def user(self, name: str) -> User | None:
        """Return a user by name."""
        return next((u for u in self.users if u.name == name), None)

    def target(self, name: str) -> Target | None:
        """Return a target by name."""
        return next((t for t in self.targets if t.name == name), None)

    def role(self, name: str) -> Role | None:
        """Return a role by name."""
        return next((r for r in self.roles if r.name == name), None)

    def roles_of(self, user: User) -> tuple[Role, ...]:
        """Return a user's roles."""
        return tuple(r for r in self.roles if r.name in user.roles)

    def user_for_key(self, key: asyncssh.SSHKey) -> User | None:
        """Return the user who registered this public key."""
        return next((user for user in self.users if user.holds(key)), None)


def load_config(path: str | os.PathLike[str]) -> BastionConfig:
    """Read and validate a config file."""
    file = str(path)
    try:
        raw = Path(file).read_bytes()
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "", f"not valid TOML: {exc}") from None
    return parse_config(data, Path(file))


def parse_config(data: dict[str, Any], path: Path, *, now: datetime | None = None) -> BastionConfig:
    """Validate parsed TOML into a BastionConfig."""
    now = now or datetime.now(UTC)
    file = str(path)
    root = ConfigTable(file, "", data)
    base = path.resolve().parent
    server = _server(root.table("server"), base)
    certificates = _certificates(root.table("certificates"), server.data_dir)
    recordings = _recordings(root.table("recordings"), server.data_dir, base)
    roles = _unique(file, "roles", [_role(t, certificates.max_ttl) for t in root.tables("roles")])
    role_names = {r.name for r in roles}
    users = _unique(file, "users", [_user(t, role_names, now) for t in root.tables("users")])
    targets = _unique(file, "targets", [_target(t, base) for t in root.tables("targets")])
    webhooks = tuple(_webhook(t) for t in root.tables("webhooks"))
    cluster = parse_cluster(root.table("cluster"), server.state_store, recordings.dir, base)
    identity = parse_identity(root.table("identity"), role_names, base) if "identity" in data else None
    root.done()
    _check_keys_unique(file, users)
    _check_approvable(file, targets, users, roles, identity)
    return BastionConfig(path, server, certificates, recordings, users, roles, targets, webhooks,
                         cluster, identity)


def _path(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _server(t: ConfigTable, base: Path) -> ServerConfig:
    listen = t.text("listen", "127.0.0.1:2222")
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise t.error("listen", f"must be HOST:PORT, e.g. 0.0.0.0:2222, not {listen!r}")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - an explicit empty host means all
    data_dir = _path(t.text("data_dir", "/var/lib/bastion"), base)
    store = t.text("state_store", "sqlite:///state.db")
    if store.startswith("sqlite:///"):
        store = "sqlite:///" + str(_path(store.removeprefix("sqlite:///"), data_dir))
    elif not store.startswith(("postgresql://", "postgres://")):
        raise t.error("state_store", "must be sqlite:///PATH or postgresql://…")
    level = t.text("log_level", "info").lower()
    if level not in ("debug", "info", "warning", "error"):
        raise t.error("log_level", "must be one of debug, info, warning, error")
    server = ServerConfig(
        listen_host=host,
        listen_port=int(port),
        public_host=t.text("public_host", "localhost" if host in ("127.0.0.1", "::1") else host),
        data_dir=data_dir,
        state_store=store,
        host_key=_path(t.text("host_key", "host_key"), data_dir),
        audit_log=_path(t.text("audit_log", "audit.jsonl"), data_dir),
        bastion_id=t.text("bastion_id", os.uname().nodename),
        pending_request_ttl=t.duration("pending_request_ttl", "24h"),
        log_level=level,
        idle_timeout=_optional_seconds(t, "idle_timeout"),
    )
    t.done()
    return server


def _optional_seconds(t: ConfigTable, name: str) -> float | None:
    """A duration that may be "0" or absent for "never"."""
    if t.data.get(name) in (None, "0", 0):
        t.seen.add(name)
        return None
    return t.duration(name).total_seconds()


def _certificates(t: ConfigTable, data_dir: Path) -> CertificatesConfig:
    default_ttl = t.duration("default_ttl", "1h")
    max_ttl = t.duration("max_ttl", "8h")
    if default_ttl > max_ttl:
        raise t.error("default_ttl", "must not be longer than max_ttl")
    certs = CertificatesConfig(
        user_ca_key=_path(t.text("user_ca_key", "user_ca"), data_dir),
        upstream_ca_key=_path(t.text("upstream_ca_key", "upstream_ca"), data_dir),
        default_ttl=default_ttl,
        max_ttl=max_ttl,
    )
    t.done()
    if certs.user_ca_key == certs.upstream_ca_key:
        raise t.error("upstream_ca_key", "must differ from user_ca_key: the two CAs are never one")
    return certs


def _recordings(t: ConfigTable, data_dir: Path, base: Path) -> RecordingsConfig:
    on_failure = t.text("on_failure", "end-session")
    if on_failure not in ("end-session",):
        raise t.error("on_failure", "must be \"end-session\" (no recording, no session)")
    rec = RecordingsConfig(
        dir=_path(t.text("dir", "recordings"), data_dir),
        auditor_keys=tuple(_path(p, base) for p in t.strings("auditor_keys", [])),
        signing_key=_path(t.text("signing_key", "recording_signing_key"), data_dir),
        on_failure=on_failure,
    )
    t.done()
    return rec


def _name(t: ConfigTable, what: str) -> str:
    name: str = t.text("name")
    if not _NAME.match(name):
        raise t.error("name", f"{what} name {name!r} must be lower-case letters, digits, '-', '_' "
                      "or '.', starting with a letter")
    return name


def _role(t: ConfigTable, max_ttl: timedelta) -> Role:
    for name in ("agent_forwarding", "x11_forwarding"):
        if name in t.data:
            t.seen.add(name)
            raise t.error(name, "agent and X11 forwarding are never offered through the bastion "
                          "(a forwarded agent would put the user's keys within reach of targets)")
    max_duration = t.duration("max_duration", None) if "max_duration" in t.data else None
    t.seen.add("max_duration")
    if max_duration is not None and max_duration > max_ttl:
        raise t.error("max_duration", "must not be longer than certificates.max_ttl")
    role = Role(
        name=_name(t, "role"),
        request=t.strings("request", []),
        approve=t.strings("approve", []),
        audit=t.strings("audit", []),
        request_unmasked=t.strings("request_unmasked", []),
        max_duration=max_duration,
        port_forwarding=t.get("port_forwarding", bool, False),
        forward_to=_forward_patterns(t),
        file_transfer=_directions(t),
    )
    if role.port_forwarding and not role.forward_to:
        raise t.error("port_forwarding", 'name the destinations a forwarded channel may reach: '
                      'forward_to = ["127.0.0.1:8080", "db.internal:5432"] (host:port patterns, '
                      "as the target host sees them)")
    t.done()
    return role


def _forward_patterns(t: ConfigTable) -> tuple[str, ...]:
    patterns = t.strings("forward_to", [])
    for pattern in patterns:
        host, sep, port = pattern.rpartition(":")
        if not sep or not host or not (port == "*" or (port.isascii() and port.isdigit())):
            raise t.error("forward_to", f"{pattern!r} is not a host:port pattern (e.g. "
                          '"127.0.0.1:8080", "*.db.internal:5432")')
    return tuple(p.lower() for p in patterns)


def _user(t: ConfigTable, roles: set[str], now: datetime) -> User:
    name = _name(t, "user")
    if name == CONTROL_USER:
        raise t.error("name", f"{CONTROL_USER!r} is reserved for the control commands")
    user_roles = t.strings("roles", [])
    for i, role in enumerate(user_roles):
        if role not in roles:
            raise t.error(f"roles[{i}]", f"unknown role {role!r} (defined: {', '.join(sorted(roles))})")
    keys = t.strings("public_keys", [])
    if not keys:
        raise t.error("public_keys", "must list at least one public key")
    for i, key in enumerate(keys):
        try:
            parsed = asyncssh.import_public_key(key)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise t.error(f"public_keys[{i}]", f"not an OpenSSH public key: {exc}") from None
        if isinstance(parsed, asyncssh.SSHCertificate):
            raise t.error(f"public_keys[{i}]", "must be a plain public key, not a certificate")
    expires = _expires(t, now)
    t.done()
    return User(name=name, roles=user_roles, public_keys=keys, expires=expires)


def _expires(t: ConfigTable, now: datetime) -> datetime | None:
    value = t.get("expires", (datetime, date, str), None)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise t.error("expires", f"must be a date like 2026-12-31, not {value!r}") from None
    if not isinstance(value, datetime):
        # A bare date means the account works through that whole day (UTC).
        value = datetime.combine(value + timedelta(days=1), time(0), UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value <= now:
        # Not a config error: a date that passes would otherwise make every later reload (and a
        # restart) fail, and a compromised user could then not be removed. Expired users load
        # and cannot log in; say so.
        log.warning("%s: %s %s is in the past: %s cannot log in (remove the user when "
                    "convenient)", t.file, t.key("expires"), value.isoformat(), t.data.get("name"))
    return value


def _target(t: ConfigTable, base: Path) -> Target:
    name = _name(t, "target")
    if name == CONTROL_USER:
        raise t.error("name", f"{CONTROL_USER!r} is reserved for the control commands")
    kind = t.text("kind")
    if kind not in TARGET_KINDS:
        raise t.error("kind", f"must be one of {', '.join(TARGET_KINDS)}, not {kind!r}")
    address = t.text("address")
    approvals = t.get("approvals_required", int, 1)
    if not 0 <= approvals <= 10:
        raise t.error("approvals_required", "must be between 0 and 10")
    host_key = t.get("host_key", str, None)
    if host_key is not None:
        try:
            asyncssh.import_public_key(host_key)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise t.error("host_key", f"not an OpenSSH public key: {exc}") from None
    known_hosts = t.get("known_hosts", str, None)
    masking = tuple(_masking(m) for m in t.tables("masking"))
    target = Target(
        name=name,
        kind=kind,
        address=address,
        login=t.text("login"),
        approvals_required=approvals,
        description=t.get("description", str, ""),
        host_key=host_key,
        known_hosts=_path(known_hosts, base) if known_hosts else None,
        database=t.get("database", str, None),
        read_only=t.get("read_only", bool, False),
        blocked_statements=_statement_kinds(t),
        max_rows=_max_rows(t),
        password=_secret_ref(t, "password", base),
        masking=masking,
        file_transfer=_directions(t),
        max_file_size=_size(t, "max_file_size", DEFAULT_MAX_FILE_SIZE),
        max_transfer_size=_size(t, "max_transfer_size", DEFAULT_MAX_TRANSFER_SIZE),
    )
    t.done()
    for name in ("file_transfer", "max_file_size", "max_transfer_size"):
        if kind != "ssh" and name in t.data:
            raise t.error(name, "file transfer applies to ssh targets only")
    if kind == "ssh" and (target.masking or target.read_only or target.blocked_statements
                          or target.max_rows):
        raise t.error("kind", "masking, read_only, blocked_statements and max_rows apply to "
                      "postgres and mysql targets only")
    if kind == "ssh" and not (host_key or known_hosts):
        raise t.error("host_key", "an ssh target needs host_key or known_hosts so the bastion can "
                      "verify it")
    return target


STATEMENT_KINDS = (
    "select", "insert", "update", "delete", "merge", "create", "alter", "drop", "truncate",
    "grant", "revoke", "copy", "call", "do", "set", "lock", "vacuum", "analyze", "load",
)


def _statement_kinds(t: ConfigTable) -> tuple[str, ...]:
    kinds = tuple(k.lower() for k in t.strings("blocked_statements", []))
    for i, kind in enumerate(kinds):
        if kind not in STATEMENT_KINDS:
            raise t.error(f"blocked_statements[{i}]", f"unknown statement kind {kind!r} "
                          f"(known: {', '.join(STATEMENT_KINDS)})")
    return kinds


def _directions(t: ConfigTable) -> frozenset[str]:
    """`file_transfer = "download" | "upload" | "both"` (absent: none)."""
    value = t.get("file_transfer", str, None)
    if value is None:
        return frozenset()
    if value not in TRANSFER_DIRECTIONS:
        raise t.error("file_transfer", f'must be "download", "upload" or "both", not {value!r}')
    return TRANSFER_DIRECTIONS[value]


def _size(t: ConfigTable, name: str, default: int) -> int:
    """A size in bytes: an integer, or a string such as "100 MiB"."""
    value = t.get(name, (int, str), default)
    if isinstance(value, str):
        found = _SIZE.match(value)
        if found is None:
            raise t.error(name, f'must be a size such as 104857600 or "100 MiB", not {value!r}')
        value = int(found.group(1)) * _SIZE_UNITS[found.group(2)]
    if value < 1:
        raise t.error(name, "must be at least 1 byte")
    return int(value)


def _max_rows(t: ConfigTable) -> int | None:
    value = t.get("max_rows", int, None)
    if value is not None and value < 1:
        raise t.error("max_rows", "must be at least 1")
    return int(value) if value is not None else None


def _masking(t: ConfigTable) -> MaskingRule:
    columns = t.strings("columns")
    for i, col in enumerate(columns):
        if col.count(".") != 2:
            raise t.error(f"columns[{i}]", f"must be schema.table.column (wildcards allowed), not {col!r}")
    strategy = t.text("strategy", "redact")
    if strategy not in MASK_STRATEGIES:
        raise t.error("strategy", f"must be one of {', '.join(MASK_STRATEGIES)}")
    t.done()
    return MaskingRule(columns=columns, strategy=strategy)


def _webhook(t: ConfigTable) -> Webhook:
    url = t.text("url")
    if not url.startswith(("http://", "https://")):
        raise t.error("url", "must be an http:// or https:// URL")
    events = frozenset(t.strings("events", []))
    headers = []
    header_table = t.table("headers")
    for key in list(header_table.data):
        ref = _secret_ref(header_table, key, Path.cwd())
        assert ref is not None
        try:
            headers.append((key, ref.resolve().reveal()))
        except ConfigError as exc:
            raise header_table.error(key, exc.problem) from None
    timeout = t.get("timeout", (int, float), 5.0)
    attempts = t.get("max_attempts", int, 5)
    try:
        hook = Webhook(url=url, events=events, headers=tuple(headers), timeout=float(timeout),
                       max_attempts=attempts)
    except ValueError as exc:
        raise t.error("url", str(exc)) from None
    t.done()
    return hook


def _unique(file: str, what: str, items: list[T]) -> tuple[T, ...]:
    seen: set[str] = set()
    for i, item in enumerate(items):
        name: str = item.name  # type: ignore[attr-defined]
        if name in seen:
            raise ConfigError(file, f"{what}[{i}].name", f"duplicate name {name!r}")
        seen.add(name)
    return tuple(items)


def _check_keys_unique(file: str, users: tuple[User, ...]) -> None:
    owner: dict[bytes, str] = {}
    for i, user in enumerate(users):
        for j, text in enumerate(user.public_keys):
            data = asyncssh.import_public_key(text).public_data
            if data in owner and owner[data] != user.name:
                raise ConfigError(file, f"users[{i}].public_keys[{j}]",
                                  f"the same key is registered for {owner[data]!r}: keys name people")
            owner[data] = user.name


def _check_approvable(
    file: str, targets: tuple[Target, ...], users: tuple[User, ...], roles: tuple[Role, ...],
    identity: IdentitySettings | None,
) -> None:
    by_name = {r.name: r for r in roles}
    # A group may have any number of members: an approving role mapped from one is enough.
    signed_in = identity.mapped_roles() if identity else frozenset()

    def holders(action: str, target: str) -> list[str]:
        return [u.name for u in users if any(by_name[r].may(action, target) for r in u.roles)]

    for i, target in enumerate(targets):
        if target.approvals_required == 0 or any(by_name[r].may("approve", target.name)
                                                 for r in signed_in):
            continue
        approvers = holders("approve", target.name)
        if len(approvers) < target.approvals_required:
            who = f"only {', '.join(approvers)} may" if approvers else "nobody may"
            raise ConfigError(
                file,
                f"targets[{i}].approvals_required",
                f"target {target.name!r} needs {target.approvals_required} approval(s) but {who} "
                f"approve it: give a role `approve = [\"{target.name}\"]` to more users",
            )
