"""``Repo.savepoint``: what a batch relies on to undo one envelope's work and only it."""

from __future__ import annotations

import pytest

from clearinghouse.usecases.app import ClearinghouseApp, Tx


class Refused(Exception):
    pass


def test_a_savepoint_undoes_only_what_happened_inside_it(ch_app: ClearinghouseApp) -> None:
    def run(tx: Tx) -> None:
        tx.repo.set_meta("before", "kept")
        with pytest.raises(Refused), tx.repo.savepoint():
            tx.repo.set_meta("inside", "undone")
            tx.repo.set_meta("before", "changed and undone")
            raise Refused
        with tx.repo.savepoint():  # the same name again, after a rollback
            tx.repo.set_meta("after", "kept")

    ch_app.execute(run)
    found = ch_app.query(lambda tx: {k: tx.repo.meta(k) for k in ("before", "inside",
                                                                    "after")})
    assert found == {"before": "kept", "inside": None, "after": "kept"}
