"""The cluster's parts on their own: notifications, the store's cluster queries, config, landing."""

from __future__ import annotations

import asyncio
import json
import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bastion.audit import AuditTrail
from bastion.cluster.node import ClusterNode
from bastion.cluster.notifications import ClusterMessage, Notifications, decode, encode
from bastion.cluster.recordings import RecordingLander, SharedDirectory
from bastion.cluster.settings import ClusterConfig, cluster_notes, parse_cluster
from bastion.config import parse_config
from bastion.config_table import ConfigTable
from bastion.errors import ConfigError
from bastion.models import IssuedCertificate, RequestStatus, SessionRecord, SessionStatus
from bastion.sessions import LiveSession
from bastion.store import Store, open_store
from bastion.store.cluster_sql import end_reason

T0 = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
PG = "postgresql://x@127.0.0.1/x"

# notifications carry no authority ----------------------------------------------------------


def test_a_message_round_trips_and_anything_else_is_ignored() -> None:
    message = ClusterMessage("recheck", "node1")
    assert decode(encode(message)) == message
    assert decode(encode(ClusterMessage("config_reloaded", "n2"))) == ClusterMessage(
        "config_reloaded", "n2")
    for junk in ("", "not json", "[]", '{"kind": "recheck"}', '{"kind": "grant", "from": "n"}',
                 '{"kind": "recheck", "from": ""}', '{"kind": "recheck", "from": 7}',
                 json.dumps({"kind": "recheck", "from": "n" * 2000})):
        assert decode(junk) is None, junk


def test_what_the_store_says_ends_a_session() -> None:
    later = T0 + timedelta(hours=1)
    assert end_reason("live", None, 5, "approved", later, False, T0) is None
    assert end_reason("ended", "ended by carol: x", 5, "approved", later, False, T0) == \
        "the session was ended elsewhere: ended by carol: x"
    assert end_reason("live", None, 5, "approved", later, True, T0) == "request 5 was revoked"
    assert end_reason("live", None, 5, "revoked", later, False, T0) == "request 5 was revoked"
    assert end_reason("live", None, 5, "expired", later, False, T0) == \
        "your access window has ended"
    assert end_reason("live", None, 5, "approved", T0, False, T0) == "your access window has ended"
    assert end_reason("live", None, 5, "pending", later, False, T0) == "request 5 is pending"


# the [cluster] table ------------------------------------------------------------------------


def _cluster(data: dict[str, object], store: str = PG, recordings: str = "/var/lib/b/rec"):  # type: ignore[no-untyped-def]
    return parse_cluster(ConfigTable("b.toml", "cluster", data), store, Path(recordings),
                         Path("/etc/b"))


def test_cluster_settings_are_checked() -> None:
    assert _cluster({}) is None
    cluster = _cluster({"recordings_store": "/mnt/rec", "heartbeat_interval": "1s",
                        "node_timeout": "3s", "recheck_interval": "2s"})
    assert cluster is not None
    assert (cluster.recordings_store, cluster.heartbeat_interval, cluster.node_timeout,
            cluster.recheck_interval) == (Path("/mnt/rec"), 1.0, 3.0, 2.0)
    problems = {
        "postgresql:// URL": ({"recordings_store": "/mnt/rec"}, "sqlite:///s.db", "/r"),
        "cluster.recordings_store: is required": ({"heartbeat_interval": "1s"}, PG, "/r"),
        "at least 3 times heartbeat_interval": (
            {"recordings_store": "/mnt/rec", "heartbeat_interval": "2s", "node_timeout": "5s"},
            PG, "/r"),
        "must be apart from recordings.dir": ({"recordings_store": "/r/shared"}, PG, "/r"),
        "cluster.heartbeat: unknown key": ({"recordings_store": "/m", "heartbeat": "1s"}, PG, "/r"),
        "bad duration": ({"recordings_store": "/m", "node_timeout": "soon"}, PG, "/r"),
    }
    for expected, (data, store, recordings) in problems.items():
        with pytest.raises(ConfigError) as caught:
            _cluster(data, store, recordings)
        assert expected in str(caught.value)


def test_check_config_says_what_a_cluster_needs(tmp_path: Path) -> None:
    data = {"server": {"state_store": PG, "bastion_id": "bastion-a", "data_dir": str(tmp_path)},
            "recordings": {"dir": str(tmp_path / "rec")},
            "cluster": {"recordings_store": str(tmp_path / "shared")}}
    notes = "\n".join(cluster_notes(parse_config(data, tmp_path / "b.toml")))
    for needed in ("'bastion-a'", "different server.bastion_id", "user CA", "upstream CA",
                   "recording signer", "masking key", str(tmp_path / "shared"), "HAProxy",
                   "is not a directory here"):
        assert needed in notes
    alone = cluster_notes(parse_config({"server": {"data_dir": str(tmp_path)}}, tmp_path / "b.toml"))
    assert alone == ["one bastion (SQLite state store); for several, see [cluster] in "
                     "config.example.toml"]


def test_the_example_cluster_table_is_valid(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parent.parent / "config.example.toml").read_text()
    block = text[text.index("# [cluster]"):]
    block = block[:block.index("\n\n")]
    table = "\n".join(line.removeprefix("# ") for line in block.splitlines()
                      if not line.startswith("# #"))
    data = {"server": {"state_store": PG, "data_dir": str(tmp_path)}, **tomllib.loads(table)}
    cluster = parse_config(data, tmp_path / "b.toml").cluster
    assert cluster is not None and cluster.recordings_store == Path("/mnt/bastion-recordings")
    assert (cluster.heartbeat_interval, cluster.node_timeout, cluster.recheck_interval) == (
        2.0, 10.0, 5.0)


# the store's cluster queries, on both backends ---------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Store]]:
    """Two bastions' stores on one database."""
    url = (f"sqlite:///{tmp_path}/state.db" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    opened = [await open_store(url), await open_store(url)]
    yield opened
    for store in opened:
        await store.close()


async def _live_session(store: Store, sid: str, bastion: str, serial: int, at: datetime = T0
                        ) -> int:
    req = await store.create_request(user="alice", target="prod", reason="r",
                                     duration=timedelta(hours=1), approvals_required=0,
                                     pending_until=at + timedelta(hours=1), now=at)
    await store.record_certificate(IssuedCertificate(
        serial=serial, request_id=req.id, user="alice", key_fingerprint="SHA256:k",
        principals=("prod",), valid_after=at, valid_before=at + timedelta(hours=1), issued_at=at))
    await store.start_session(SessionRecord(
        id=sid, user="alice", target="prod", kind="ssh", request_id=req.id, cert_serial=serial,
        client="127.0.0.1:1", bastion_id=bastion, started_at=at))
    return req.id


async def test_a_silent_node_is_reaped_once_by_one_survivor(stores: list[Store]) -> None:
    a, b = stores
    await a.heartbeat("a", "10.0.0.1:2222", T0, starting=True)
    await b.heartbeat("b", "10.0.0.2:2222", T0, starting=True)
    await _live_session(b, "s-on-b", "b", 1)
    await _live_session(a, "s-on-a", "a", 2)
    await a.heartbeat("a", "10.0.0.1:2222", T0 + timedelta(seconds=9))
    assert [n.bastion_id for n in await a.list_nodes()] == ["a", "b"]
    silent_since = T0 + timedelta(seconds=5)
    first, second = await asyncio.gather(
        a.reap_dead_nodes(silent_since, T0 + timedelta(seconds=10), by="a"),
        a.reap_dead_nodes(silent_since, T0 + timedelta(seconds=10), by="a"))
    reaped = first + second
    assert len(reaped) == 1
    node, sessions = reaped[0]
    assert node.bastion_id == "b" and [s.id for s in sessions] == ["s-on-b"]
    ended = await a.get_session("s-on-b")
    assert ended is not None and ended.status is SessionStatus.ENDED_ABNORMALLY
    assert ended.end_reason == ("bastion b stopped answering (no heartbeat since 12:00:00 UTC); "
                                "its recording is cut off")
    still = await a.get_session("s-on-a")
    assert still is not None and still.status is SessionStatus.LIVE
    assert [n.bastion_id for n in await a.list_nodes()] == ["a"]
    # No node reaps itself, however late its own heartbeat.
    assert await a.reap_dead_nodes(T0 + timedelta(hours=1), T0 + timedelta(hours=1), by="a") == []
    await a.forget_node("a")
    assert await a.list_nodes() == []


async def test_a_recheck_finds_what_ended_elsewhere(stores: list[Store]) -> None:
    a, b = stores
    revoked = await _live_session(a, "revoked", "a", 11)
    await _live_session(a, "killed", "a", 12)
    await _live_session(a, "fine", "a", 13)
    await b.close_request(revoked, status=RequestStatus.REVOKED, by="bob", reason="r", now=T0)
    await b.end_session("killed", status=SessionStatus.ENDED, reason="ended by carol", now=T0)
    found = await a.sessions_to_end(["revoked", "killed", "fine", "nosuch"],
                                    T0 + timedelta(minutes=1))
    assert found == {"revoked": f"request {revoked} was revoked",
                     "killed": "the session was ended elsewhere: ended by carol",
                     "nosuch": "the session is not on record"}
    later = await a.sessions_to_end(["fine"], T0 + timedelta(hours=2))
    assert later == {"fine": "your access window has ended"}


async def test_finished_recordings_land_in_the_shared_store(stores: list[Store],
                                                            tmp_path: Path) -> None:
    store = stores[0]
    local, shared = tmp_path / "local", tmp_path / "shared"
    local.mkdir()
    await _live_session(store, "done", "a", 21)
    await _live_session(store, "going", "a", 22)
    (local / "done.rec").write_bytes(b"finished")
    (local / "going.rec").write_bytes(b"still being written")
    (local / "other.txt").write_bytes(b"not a recording")
    lander = RecordingLander(store, SharedDirectory(shared), lambda: local, lambda: {"going"})
    assert await lander.land_finished() == 1
    assert (shared / "done.rec").read_bytes() == b"finished"
    assert not (local / "done.rec").exists() and (local / "going.rec").exists()
    assert sorted(p.name for p in shared.iterdir()) == ["done.rec"]  # no partial left behind
    done = await store.get_session("done")
    assert done is not None and done.recording == str(shared / "done.rec")
    assert await lander.land_finished() == 0


@pytest.mark.postgres
async def test_nodes_hear_each_other_but_not_themselves(pg_url: str) -> None:
    heard: dict[str, list[ClusterMessage]] = {"a": [], "b": []}
    arrived = asyncio.Event()

    def node(name: str) -> Notifications:
        async def on_message(message: ClusterMessage) -> None:
            heard[name].append(message)
            arrived.set()

        async def on_connected() -> None:
            return None

        return Notifications(pg_url, name, on_message, on_connected)

    a, b = node("a"), node("b")
    await a.start()
    await b.start()
    try:
        assert await a.publish("recheck")
        await asyncio.wait_for(arrived.wait(), 5)
        assert heard == {"a": [], "b": [ClusterMessage("recheck", "a")]}
    finally:
        await a.stop()
        await b.stop()


async def test_a_lost_notification_is_caught_by_the_recheck(stores: list[Store],
                                                           tmp_path: Path) -> None:
    here, elsewhere = stores
    now = datetime.now(UTC)
    revoked = await _live_session(here, "revoked-here", "a", 31, now)
    await _live_session(here, "killed-there", "a", 32, now)
    await _live_session(here, "untouched", "a", 33, now)
    live = {sid: LiveSession(await _record(here, sid), datetime.now(UTC) + timedelta(hours=1))
            for sid in ("revoked-here", "killed-there", "untouched")}
    people_checked = []

    async def recheck_people() -> None:
        people_checked.append(True)

    node = ClusterNode(
        ClusterConfig(tmp_path / "shared"), here, AuditTrail(here, tmp_path / "audit.jsonl", None),
        store_url="postgresql://unused", bastion_id="a", live=lambda: live,
        reload=_no_reload, lander=RecordingLander(here, SharedDirectory(tmp_path / "shared"),
                                                  lambda: tmp_path, lambda: live),
        recheck_people=recheck_people)
    # Another node revokes and kills, and its notifications never arrive: the re-check finds both.
    await elsewhere.close_request(revoked, status=RequestStatus.REVOKED, by="bob", reason="r",
                                  now=datetime.now(UTC))
    await elsewhere.end_session("killed-there", status=SessionStatus.ENDED,
                                reason="ended by carol", now=datetime.now(UTC))
    assert await node.recheck() == 2
    assert {sid: s.end_reason for sid, s in live.items()} == {
        "revoked-here": f"request {revoked} was revoked",
        "killed-there": "the session was ended elsewhere: ended by carol",
        "untouched": None}
    assert people_checked  # sign-ins ended on another node (unbind) are looked at too


async def _record(store: Store, sid: str) -> SessionRecord:
    record = await store.get_session(sid)
    assert record is not None
    return record


async def _no_reload() -> bool:
    return True
