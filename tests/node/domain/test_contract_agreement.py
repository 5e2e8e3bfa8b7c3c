"""The node writes its chain in the contract's terms: every account code it can form is
read back by ``timebank.accounts`` as the same account, and ``account_from_code`` refuses
what the contract refuses (a passbook reader and the auditor read with the contract)."""

from __future__ import annotations

import pytest

from node.domain import ledger
from runtime.errors import InvariantViolation
from timebank import accounts

REF = "ab" * 32


def _node_accounts() -> list[ledger.Account]:
    return [ledger.Account.of_person(REF, o) for o in ledger.Origin] + [
        ledger.issuance(o) for o in ledger.Origin] + [
        ledger.CONSUMPTION, ledger.DONATION_POOL, ledger.CITY_GRANT, ledger.CLEARING]


@pytest.mark.parametrize("account", _node_accounts(), ids=lambda a: a.code[:24])
def test_every_code_the_node_forms_reads_back_as_the_same_account(
        account: ledger.Account) -> None:
    contract = accounts.parse_account(account.code)
    assert (contract.kind, contract.origin, contract.person_ref) == (
        account.kind, account.origin, account.person_ref)
    assert ledger.account_from_code(account.code) == account


@pytest.mark.parametrize("code", ["", "person/x/individual", "issuance", "donation_pool/x",
                                  f"person/{REF}/stolen", "nothing"])
def test_a_code_the_contract_refuses_is_a_bug_on_the_node(code: str) -> None:
    with pytest.raises(InvariantViolation, match="not an account code"):
        ledger.account_from_code(code)
