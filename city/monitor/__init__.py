"""An outside monitor of a city: ``timebank monitor`` (issue 14).

Run by someone who is not the bureau, with only the city's two public keys and the
addresses of the clearinghouse and every district node, it follows the clearinghouse's
log, compares every district's tree heads with it, and keeps evidence of any split view
that anyone can check again with the clearinghouse's public key alone.

- ``state``: what the monitor remembers between rounds, and its evidence files.
- ``watch``: one round (``check_once``) and what it finds.
- ``command``: the ``check`` and ``check-evidence`` commands.
"""

from city.monitor.command import app
from city.monitor.watch import Finding, Round, Target, check_once

__all__ = ["Finding", "Round", "Target", "app", "check_once"]
