"""Real PostgreSQL databases for tests: a migrated template per schema, a fresh copy per test.

Both the node's and the clearinghouse's fixtures use these. With
TIMEBANK_REQUIRE_POSTGRES=1 (as in CI) an unreachable PostgreSQL fails the run.

A copy costs a CREATE DATABASE and a DROP DATABASE (0.3 to 1 s each on the shared 2-core
CI machine, several hundred tests a run), so a test process keeps the copies its tests
are done with and hands them out again, reset: a test gets a database whose schema, rows
and sequences are exactly the template's, as a new copy's would be. A copy is reused only
if its schema still is the template's (``_FINGERPRINT``: tables, columns, constraints,
indexes, sequences, functions, triggers, views, types, schemas, extensions, settings);
one a test changed is dropped and a new one made. Rows are deleted (with the foreign
keys' triggers off, ``session_replication_role``), the template's own rows (such as
``alembic_version``) put back, and every sequence set back where the template's was.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.pool import NullPool

PG_ADMIN_URL = os.environ.get(
    "TIMEBANK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("TIMEBANK_REQUIRE_POSTGRES") == "1"


def database_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


def admin_engine() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def migrated_template(prefix: str, upgrade: Callable[[Engine], None]) -> Iterator[str | None]:
    """Yield the name of a migrated template database, or None without PostgreSQL."""
    try:
        admin = admin_engine()
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # any failure means "no PostgreSQL here"
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required (TIMEBANK_REQUIRE_POSTGRES=1) but unreachable "
                        f"at {PG_ADMIN_URL}: {e}")
        yield None
        return
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(database_url(name))
    upgrade(engine)
    engine.dispose()
    yield name
    pool = _pools.pop(name, None)
    with admin.connect() as conn:
        for made in [] if pool is None else pool.made:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{made}" WITH (FORCE)'))
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def fresh_database(template: str | None, prefix: str) -> Iterator[str]:
    """Yield the URL of a database equal to a new copy of the template (a reset one this
    process used before, or a new copy); hand it back afterwards."""
    if template is None:
        pytest.skip("PostgreSQL is not reachable (set TIMEBANK_REQUIRE_POSTGRES=1 to fail)")
    pool = _pools.get(template) or _pools.setdefault(template, _Pool(template))
    name = pool.take(prefix)
    try:
        yield database_url(name)
    finally:
        pool.give_back(name)


#: One line per thing in the schema that a test could change; their digest. System
#: schemas are left out; everything else (public and any other schema) is in.
_USER = ("NOT IN ('pg_catalog', 'information_schema') AND {0} NOT LIKE 'pg\\_toast%' "
         "AND {0} NOT LIKE 'pg\\_temp%'")
_FINGERPRINT = f"""
SELECT md5(coalesce(string_agg(line, E'\\n' ORDER BY line), '')) FROM (
  SELECT concat_ws(' ', 'class', c.oid::regclass, c.relkind, c.reloptions, c.relrowsecurity,
                   c.relacl)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname {_USER.format("n.nspname")}
  UNION ALL
  SELECT concat_ws(' ', 'column', a.attrelid::regclass, a.attnum, a.attname,
                   format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
                   a.attgenerated, pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE a.attnum > 0 AND NOT a.attisdropped AND n.nspname {_USER.format("n.nspname")}
  UNION ALL
  SELECT concat_ws(' ', 'constraint', conrelid::regclass, conname, pg_get_constraintdef(oid))
    FROM pg_constraint
   WHERE connamespace::regnamespace::text {_USER.format("connamespace::regnamespace::text")}
  UNION ALL
  SELECT concat_ws(' ', 'index', schemaname, indexdef) FROM pg_indexes
   WHERE schemaname {_USER.format("schemaname")}
  UNION ALL
  SELECT concat_ws(' ', 'sequence', seqrelid::regclass, seqtypid, seqstart, seqincrement,
                   seqmax, seqmin, seqcycle) FROM pg_sequence
  UNION ALL
  SELECT concat_ws(' ', 'trigger', pg_get_triggerdef(oid), tgenabled) FROM pg_trigger
   WHERE NOT tgisinternal
  UNION ALL
  SELECT concat_ws(' ', 'function', p.oid::regprocedure, md5(p.prosrc))
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname {_USER.format("n.nspname")}
  UNION ALL
  SELECT concat_ws(' ', 'view', schemaname, viewname, definition) FROM pg_views
   WHERE schemaname {_USER.format("schemaname")}
  UNION ALL
  SELECT concat_ws(' ', 'type', t.oid::regtype, t.typtype,
                   (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder)
                      FROM pg_enum WHERE enumtypid = t.oid))
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
   WHERE n.nspname {_USER.format("n.nspname")} AND t.typtype IN ('e', 'd', 'r', 'm', 'c')
     AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid AND c.relkind <> 'c')
  UNION ALL
  SELECT concat_ws(' ', 'schema', nspname, nspacl) FROM pg_namespace
   WHERE nspname {_USER.format("nspname")}
  UNION ALL
  SELECT concat_ws(' ', 'extension', extname, extversion) FROM pg_extension
  UNION ALL
  SELECT concat_ws(' ', 'policy', polrelid::regclass, polname) FROM pg_policy
  UNION ALL
  SELECT concat_ws(' ', 'setting', setconfig) FROM pg_db_role_setting
   WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
) AS schema_lines(line)
"""

#: Every table of the user's schemas (partitions too: deleting twice does no harm).
_TABLES = f"""
SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname {_USER.format("n.nspname")} ORDER BY 1
"""


def _sequences(conn: Connection) -> list[tuple[str, int, bool]]:
    """Every sequence and where it stands: (name, last value, whether it was used)."""
    names = conn.execute(text("SELECT seqrelid::regclass::text FROM pg_sequence ORDER BY 1"))
    return [(seq, *conn.execute(text(f"SELECT last_value, is_called FROM {seq}")).one())
            for (seq,) in names.all()]


class _Pool:
    """The copies of one template this test process made, and which of them are free."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.made: list[str] = []
        self.free: list[str] = []
        engine = create_engine(database_url(template), poolclass=NullPool)
        try:
            with engine.connect() as conn:
                self.fingerprint: str = conn.execute(text(_FINGERPRINT)).scalar_one()
                self.tables: list[str] = list(conn.execute(text(_TABLES)).scalars())
                #: the template's own rows, as JSON, to put back after the deletes
                self.rows = {t: rows for t in self.tables if (rows := conn.execute(text(
                    f"SELECT json_agg(r)::text FROM {t} AS r")).scalar_one()) is not None}
                self.sequences = _sequences(conn)
        finally:
            engine.dispose()

    def take(self, prefix: str) -> str:
        if self.free:
            return self.free.pop()
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        admin = admin_engine()
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        finally:
            admin.dispose()
        self.made.append(name)
        return name

    def give_back(self, name: str) -> None:
        """Reset the database and keep it, or drop it if the test changed its schema (or
        the reset failed)."""
        admin = admin_engine()
        try:
            with admin.connect() as conn:  # what the test left connected, as DROP would
                conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
            if self._reset(name):
                self.free.append(name)
                return
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            self.made.remove(name)
        finally:
            admin.dispose()

    def _reset(self, name: str) -> bool:
        engine = create_engine(database_url(name), poolclass=NullPool)
        try:
            with engine.begin() as conn:
                if conn.execute(text(_FINGERPRINT)).scalar_one() != self.fingerprint:
                    return False
                conn.execute(text("SET LOCAL session_replication_role = replica"))
                for table in self.tables:
                    conn.execute(text(f"DELETE FROM {table}"))
                for table, rows in self.rows.items():
                    conn.execute(text(f"INSERT INTO {table} SELECT * FROM "
                                      f"json_populate_recordset(NULL::{table}, :rows)"),
                                 {"rows": rows})
                for seq, value, called in self.sequences:
                    conn.execute(text("SELECT setval(CAST(:seq AS regclass), :value, :called)"),
                                 {"seq": seq, "value": value, "called": called})
                assert _sequences(conn) == self.sequences
            return True
        except Exception:  # any failure at all: this copy is not reused
            return False
        finally:
            engine.dispose()


_pools: dict[str, _Pool] = {}
