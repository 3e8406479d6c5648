"""The `[cluster]` table: several bastions as one, and what such a cluster needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.config_table import ConfigTable

if TYPE_CHECKING:
    from bastion.config import BastionConfig

__all__ = ["ClusterConfig", "cluster_notes", "parse_cluster"]

# A node is dead after this many missed heartbeats at least: one slow store round trip must not
# end a healthy node's sessions.
MIN_MISSED_BEATS = 3


@dataclass(frozen=True)
class ClusterConfig:
    """Where the nodes keep recordings together, and how often they check on each other."""

    recordings_store: Path
    heartbeat_interval: float = 2.0
    node_timeout: float = 10.0
    recheck_interval: float = 5.0


def parse_cluster(t: ConfigTable, state_store: str, recordings_dir: Path, base: Path
                  ) -> ClusterConfig | None:
    """Read `[cluster]`; None when the table is absent (one bastion on its own)."""
    if not t.data:
        return None
    if not state_store.startswith(("postgresql://", "postgres://")):
        raise t.error("recordings_store", "a cluster needs a shared state store: set "
                      "server.state_store to a postgresql:// URL")
    raw = Path(t.text("recordings_store")).expanduser()
    cluster = ClusterConfig(
        recordings_store=raw if raw.is_absolute() else base / raw,
        heartbeat_interval=t.duration("heartbeat_interval", "2s").total_seconds(),
        node_timeout=t.duration("node_timeout", "10s").total_seconds(),
        recheck_interval=t.duration("recheck_interval", "5s").total_seconds(),
    )
    t.done()
    shared, local = cluster.recordings_store.resolve(), recordings_dir.resolve()
    if shared == local or local in shared.parents or shared in local.parents:
        raise t.error("recordings_store", f"{shared} must be apart from recordings.dir ({local}): "
                      "each node writes there before its recordings land in the shared store")
    if cluster.node_timeout < MIN_MISSED_BEATS * cluster.heartbeat_interval:
        raise t.error("node_timeout", f"must be at least {MIN_MISSED_BEATS} times heartbeat_interval "
                      f"({MIN_MISSED_BEATS * cluster.heartbeat_interval:g}s), or a slow heartbeat "
                      "would end a live node's sessions")
    return cluster


def cluster_notes(config: BastionConfig) -> list[str]:
    """What `bastion check-config` tells an operator about running this config on several nodes."""
    server, cluster = config.server, config.cluster
    if cluster is None:
        if server.state_store.startswith("sqlite:"):
            return ["one bastion (SQLite state store); for several, see [cluster] in "
                    "config.example.toml"]
        return ["one bastion on a PostgreSQL state store; add a [cluster] table to run several"]
    shared = cluster.recordings_store
    notes = [
        f"cluster node {server.bastion_id!r}: every node needs a different server.bastion_id "
        "(it defaults to the host name)",
        f"heartbeat every {cluster.heartbeat_interval:g}s; a node silent for "
        f"{cluster.node_timeout:g}s is dead and its sessions are ended by a survivor",
        "the same files on every node (copy them, or point the paths at a shared mount): "
        f"host key {server.host_key}, user CA {config.certificates.user_ca_key}, upstream CA "
        f"{config.certificates.upstream_ca_key}, recording signer {config.recordings.signing_key}, "
        f"masking key {server.data_dir / 'masking_key'}, and this config",
        f"recordings are written to {config.recordings.dir} (local to each node) and land in "
        f"{shared}, which every node must mount read-write",
        "put the nodes behind a TCP load balancer (HAProxy: see README, Running several bastions)",
    ]
    if not shared.is_dir():
        notes.append(f"warning: cluster.recordings_store {shared} is not a directory here (yet)")
    return notes
