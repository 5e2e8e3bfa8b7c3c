"""Until the node takes them from the contract, its own copies of the account codes and of
the ledger's hash chain must say exactly what ``timebank.accounts`` and
``timebank.chain`` say: a passbook's reader and the auditor recompute with the contract."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from node.domain import ledger
from node.storage.repo import account_from_code
from timebank import accounts, chain

REF = "ab" * 32


def _node_accounts() -> list[ledger.Account]:
    return [ledger.Account.of_person(REF, o) for o in ledger.Origin] + [
        ledger.issuance(o) for o in ledger.Origin] + [
        ledger.CONSUMPTION, ledger.DONATION_POOL, ledger.CITY_GRANT, ledger.CLEARING]


def test_the_kinds_and_origins_are_the_same_names() -> None:
    assert [str(k) for k in ledger.AccountKind] == [str(k) for k in accounts.AccountKind]
    assert [str(o) for o in ledger.Origin] == [str(o) for o in accounts.Origin]


@pytest.mark.parametrize("account", _node_accounts(), ids=lambda a: a.code[:24])
def test_the_node_spells_and_reads_every_code_as_the_contract(account: ledger.Account) -> None:
    contract = accounts.parse_account(account.code)
    assert contract.code == account.code
    assert (str(contract.kind), contract.origin, contract.person_ref) == (
        str(account.kind), account.origin, account.person_ref)
    node = account_from_code(contract.code)
    assert (str(node.kind), node.origin, node.person_ref) == (
        str(contract.kind), contract.origin, contract.person_ref)


def test_the_node_hashes_its_chain_as_the_contract() -> None:
    entry = ledger.Entry(ledger.EntryKind.DONATION, (
        ledger.Posting(ledger.Account.of_person(REF, ledger.Origin.INDIVIDUAL), -15),
        ledger.Posting(ledger.DONATION_POOL, 15)), datetime(2026, 3, 2, 1, tzinfo=UTC),
        memo="捐给养老池", order_id=4, reverses_seq=0)
    canonical = chain.entry_bytes(
        seq=9, kind=str(entry.kind), at=chain.format_time(entry.at), memo=entry.memo,
        order_id=entry.order_id, reverses_seq=entry.reverses_seq,
        postings=[(p.account.code, p.minutes) for p in entry.postings])
    assert ledger.canonical_bytes(9, entry) == canonical
    assert ledger.format_time(entry.at) == chain.format_time(entry.at)
    assert ledger.genesis_hash("320115") == chain.genesis_hash("320115")
    prev = ledger.genesis_hash("320115")
    assert ledger.chain_hash(prev, 9, entry) == chain.link_hash(prev, canonical)
