"""The states a settlement statement goes through on a district node (issue 16).

A statement is *checked* once verified and stored; this district then *countersigned*
or *disputed* its line (or, not being on it, answered nothing); it is *final* once every
district countersigned or a city-signed decision upheld it; *posted* once its net is in
the ledger. States only move forward, in this order."""

from __future__ import annotations

from enum import StrEnum


class SettlementState(StrEnum):
    CHECKED = "checked"
    COUNTERSIGNED = "countersigned"
    DISPUTED = "disputed"
    FINAL = "final"
    POSTED = "posted"

    @property
    def order(self) -> int:
        return list(SettlementState).index(self)

    @property
    def label(self) -> str:
        """The state as an operator reads it, Chinese first."""
        return _LABELS[self]


_LABELS = {
    SettlementState.CHECKED: "已核验，待答复 / checked, not answered yet",
    SettlementState.COUNTERSIGNED: "已会签 / countersigned",
    SettlementState.DISPUTED: "已提出异议 / disputed",
    SettlementState.FINAL: "已最终确定，待入账 / final, not posted yet",
    SettlementState.POSTED: "已入账 / posted",
}
