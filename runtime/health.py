"""What a serving process's gRPC health says about its database.

``DatabaseProbe`` runs ``SELECT 1`` every few seconds on a connection of its own (not
one from the service's pool, so a pool of dead connections cannot hide a database that
came back, nor a pooled connection one that went away), each attempt bounded: on
PostgreSQL by ``connect_timeout`` and ``statement_timeout``, on SQLite by its busy
timeout. While the probe fails, health service "" (the process) is NOT_SERVING and
``timebank_<service>_database_up`` is 0; the first probe that succeeds sets both back.
Orchestrators stop sending work to a process whose database it cannot reach, and
restart nothing: the process recovers by itself when the database does.

The result is per process, as it should be: several clearinghouse replicas on one
PostgreSQL each report what they themselves can reach.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import structlog
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from runtime.periodic import Periodic

log = structlog.get_logger("runtime.health")

#: Seconds between probes, and the most one probe may take to connect or to answer.
PROBE_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 3


def probe_engine(url: str, timeout: int = PROBE_TIMEOUT_SECONDS) -> Engine:
    """An engine that opens a new, bounded connection for each probe. A SQLite file is
    opened read-write but never created: a database file that went away is unreachable,
    not replaced by an empty one."""
    if url.startswith("sqlite:///") and ":memory:" not in url:
        path = url.removeprefix("sqlite:///")
        return create_engine(f"sqlite:///file:{quote(path)}?mode=rw&uri=true",
                             poolclass=NullPool, connect_args={"timeout": timeout})
    if url.startswith("sqlite"):
        return create_engine(url, poolclass=NullPool, connect_args={"timeout": timeout})
    return create_engine(url, poolclass=NullPool, hide_parameters=True, connect_args={
        "connect_timeout": timeout, "options": f"-c statement_timeout={timeout * 1000}"})


def reachable(engine: Engine) -> bool:
    """Whether ``SELECT 1`` succeeds on a new connection."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()
    except Exception:  # any failure means unreachable; the probe logs the change
        return False
    return True


class DatabaseProbe(Periodic):
    """Probes the database every ``interval`` seconds and calls ``report(up)`` after
    each probe; logs each change. ``start`` probes once before it returns, so what
    health and the gauge say is never a guess."""

    thread_name = "timebank-db-probe"
    what = "probing the database"

    def __init__(self, url: str, report: Callable[[bool], None], *,
                 interval: float = PROBE_SECONDS, timeout: int = PROBE_TIMEOUT_SECONDS) -> None:
        super().__init__(interval)
        self._engine = probe_engine(url, timeout)
        self._report = report
        self.up: bool | None = None

    def probe_once(self) -> bool:
        up = reachable(self._engine)
        if up != self.up:
            if up:
                log.info("数据库可达 / database reachable")
            else:
                log.error("数据库不可达：健康检查报告 NOT_SERVING / database unreachable: "
                          "health reports NOT_SERVING", timeout_seconds=PROBE_TIMEOUT_SECONDS)
        self.up = up
        self._report(up)
        return up

    def round(self) -> None:
        self.probe_once()

    def start(self) -> None:
        self.probe_once()
        super().start()

    def stop(self, timeout: float | None = 10.0) -> None:
        super().stop(timeout)
        self._engine.dispose()


__all__ = ["PROBE_SECONDS", "PROBE_TIMEOUT_SECONDS", "DatabaseProbe", "probe_engine",
           "reachable"]
