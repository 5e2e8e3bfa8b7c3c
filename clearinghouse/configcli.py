"""`timebank clearinghouse config show|check|example` (``runtime.configcli``, ADR 0020)."""

from __future__ import annotations

from clearinghouse.config import SCHEMA, check_ready, example
from runtime.configcli import config_commands

config_app = config_commands(SCHEMA, check_ready, example)

__all__ = ["config_app"]
