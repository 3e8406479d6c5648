"""Grant account names: each installation (the bastions sharing one state store) owns only the
accounts that carry its tag, so two installations on one database server keep apart."""

from __future__ import annotations

import pytest

from bastion.db.accounts import AccountNames, new_installation_tag


def test_an_account_names_the_installation_the_person_and_the_request() -> None:
    names = AccountNames("k3f9z")
    assert names.account("Alice.Smith", 12) == "bx_k3f9z_alice_smith_r12"
    assert names.request_of("bx_k3f9z_alice_smith_r12") == 12


def test_another_installations_accounts_are_not_ours() -> None:
    ours, theirs = AccountNames("aaaaa"), AccountNames("bbbbb")
    account = theirs.account("alice", 1)
    assert ours.request_of(account) is None
    assert theirs.request_of(account) == 1
    # Accounts of the untagged naming (before installations had tags) are nobody's.
    assert ours.request_of("bx_alice_r1") is None


@pytest.mark.parametrize("account", ["bx_aaaaa_alice", "bx_aaaaa_alice_r", "bx_aaaaa_alice_rx1",
                                     "bx_aaaaa_alice_r1;drop", "BX_aaaaa_alice_r1", "bx_aaaaa_r-1"])
def test_names_that_are_not_grant_accounts_are_ignored(account: str) -> None:
    assert AccountNames("aaaaa").request_of(account) is None


def test_names_stay_within_mysqls_32_characters() -> None:
    names = AccountNames("zzzzz")
    account = names.account("a-very-long-user-name-from-an-identity-provider", 123456789)
    assert len(account) <= 32
    assert names.request_of(account) == 123456789


@pytest.mark.parametrize("tag", ["", "abcd", "abcdef", "ABCDE", "ab_de", "a%cde"])
def test_a_malformed_tag_is_refused(tag: str) -> None:
    with pytest.raises(ValueError, match="installation tag"):
        AccountNames(tag)


def test_new_tags_are_valid_and_differ() -> None:
    tags = {new_installation_tag() for _ in range(50)}
    assert len(tags) > 45
    for tag in tags:
        AccountNames(tag)
