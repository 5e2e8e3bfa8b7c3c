"""Alembic environment of the node's schema (run by ``node.storage.migrate``)."""

from node.storage.schema import Base
from runtime.migrate import run_environment

run_environment(Base.metadata)
