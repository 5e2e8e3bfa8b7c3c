"""The offline audit of a city: ``timebank audit``.

Given a city's data directory, it opens every database read-only and checks that the
records hold together: each district's hash chain against the checkpoints of it that the
clearinghouse's transparency log records (not against the district's own record of its
anchors, which is compared with the log on its own), every tree head a district holds
against the log, the log itself with every signed tree head and cosignature, claims on
both sides, receipts, positions and admissions. Given a running clearinghouse's address
and public key instead, it checks what anyone can fetch over gRPC. Each check names the
first bad record it finds; nothing is ever written. It verifies with the contract
(``timebank``: the hash chain, account codes, anchors, the log's proofs and checkpoints)
and reads each database as data, importing no service's storage or use cases.

- ``report``: the results (Report, Check, BadRecord) and AuditError.
- ``readonly``: opening SQLite or PostgreSQL databases read-only.
- ``tables``: the tables and columns the audit reads (its read format; no service models).
- ``storedlog``: the clearinghouse's log as its tables store it, rebuilt and checked.
- ``frontier``: a Merkle tree read leaf by leaf, its root known at every size.
- ``logscan``: one pass over the log's leaves, which every other check reads (districts'
  checkpoints with their signatures checked under the key held at each leaf).
- ``clearinghouse``: the clearinghouse's database (``audit_clearinghouse_database``).
- ``district``: a district's ledger against the log, its anchor table, the tree heads it
  holds, and its claims.
- ``directory``: a whole data directory (``audit_data_dir``).
- ``remote``: a running clearinghouse over gRPC (``audit_remote``).
- ``command``: ``timebank audit`` itself (``run_audit``).
"""

from city.audit.clearinghouse import audit_clearinghouse_database
from city.audit.command import run_audit
from city.audit.directory import audit_data_dir
from city.audit.remote import audit_remote
from city.audit.report import AuditError, BadRecord, Check, Report

__all__ = ["AuditError", "BadRecord", "Check", "Report", "audit_clearinghouse_database",
           "audit_data_dir", "audit_remote", "run_audit"]
