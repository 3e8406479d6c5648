"""Access decisions as plain functions: requests, reviews, revocation, unmasked grants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import make_key

from bastion import policy
from bastion.config import BastionConfig, parse_config
from bastion.errors import AccessDenied, InvalidRequest, NotFound
from bastion.models import AccessRequest, RequestStatus

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def config(tmp_path: Path) -> BastionConfig:
    keys = {n: make_key(tmp_path / n) for n in ("a", "b", "c", "host")}
    data: dict[str, Any] = {
        "server": {"data_dir": str(tmp_path)},
        "roles": [
            {"name": "dev", "request": ["prod", "db"], "max_duration": "2h"},
            {"name": "sre", "approve": ["*"], "request": ["*"], "request_unmasked": ["db"]},
        ],
        "users": [
            {"name": "alice", "roles": ["dev"], "public_keys": [keys["a"]]},
            {"name": "bob", "roles": ["sre"], "public_keys": [keys["b"]]},
            {"name": "carl", "roles": ["dev"], "public_keys": [keys["c"]],
             "expires": (NOW + timedelta(minutes=30)).isoformat()},
        ],
        "targets": [
            {"name": "prod", "kind": "ssh", "address": "h:22", "login": "x", "host_key": keys["host"]},
            {"name": "db", "kind": "postgres", "address": "h:5432", "login": "x"},
        ],
    }
    return parse_config(data, tmp_path / "c.toml", now=NOW)


def _req(**kw: Any) -> AccessRequest:
    base = dict(id=1, user="alice", target="prod", reason="r", duration=timedelta(hours=1),
                status=RequestStatus.PENDING, created_at=NOW, pending_until=NOW + timedelta(hours=1),
                approvals_required=1)
    return AccessRequest(**{**base, **kw})


def test_plan_uses_default_and_caps_at_role_maximum(config: BastionConfig) -> None:
    plan = policy.plan_request(config, "alice", "prod", "INC-1", None, NOW)
    assert plan.duration == timedelta(hours=1) and plan.approvals_required == 1
    with pytest.raises(InvalidRequest, match="longer than your roles allow"):
        policy.plan_request(config, "alice", "prod", "INC-1", timedelta(hours=3), NOW)


def test_contractor_window_never_outlives_the_account(config: BastionConfig) -> None:
    plan = policy.plan_request(config, "carl", "prod", "INC-1", timedelta(hours=1), NOW)
    assert plan.duration == timedelta(minutes=30)
    with pytest.raises(AccessDenied, match="expired"):
        policy.plan_request(config, "carl", "prod", "INC-1", None, NOW + timedelta(hours=1))


def test_unknown_target_lists_the_allowed_ones(config: BastionConfig) -> None:
    with pytest.raises(NotFound, match="targets you may request: prod, db"):
        policy.plan_request(config, "alice", "nope", "x", None, NOW)


def test_unmasked_needs_its_own_role_grant(config: BastionConfig) -> None:
    with pytest.raises(AccessDenied, match="unmasked"):
        policy.plan_request(config, "alice", "db", "INC-2", None, NOW, unmasked=True)
    assert policy.plan_request(config, "bob", "db", "INC-2", None, NOW, unmasked=True)
    with pytest.raises(InvalidRequest, match="database targets only"):
        policy.plan_request(config, "bob", "prod", "INC-2", None, NOW, unmasked=True)


def test_reviews(config: BastionConfig) -> None:
    with pytest.raises(AccessDenied, match="your own request"):
        policy.check_review(config, "alice", _req(), NOW)
    with pytest.raises(AccessDenied, match="may approve"):
        policy.check_review(config, "carl", _req(), NOW)
    policy.check_review(config, "bob", _req(), NOW)
    with pytest.raises(InvalidRequest, match="expired"):
        policy.check_review(config, "bob", _req(), NOW + timedelta(hours=2))


def test_revoke_by_requester_or_approver_only(config: BastionConfig) -> None:
    approved = _req(status=RequestStatus.APPROVED, expires_at=NOW + timedelta(hours=1))
    policy.check_revoke(config, "alice", approved, NOW)
    policy.check_revoke(config, "bob", approved, NOW)
    with pytest.raises(AccessDenied):
        policy.check_revoke(config, "carl", approved, NOW)
