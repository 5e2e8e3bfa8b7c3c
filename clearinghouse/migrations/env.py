"""Alembic environment of the clearinghouse's schema (run by clearinghouse.storage.migrate)."""

from clearinghouse.storage.schema import Base
from runtime.migrate import run_environment

run_environment(Base.metadata)
