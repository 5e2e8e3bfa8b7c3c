"""The service runtime that the node and the clearinghouse share (ADR 0010).

What a long-running service of this project needs and the wire contract does not: the
error base and its gRPC status mapping (``errors``, ``rpcstatus``), one gRPC server
skeleton (``server``) with one per-call observer (``observe``), metrics and logging,
work on a timer (``periodic``), configuration and command-line helpers (``config``,
``console``), database engines with one writer at a time, migrations, clocks and
locks. Both services import it; it imports neither, and the contract (``timebank``)
never imports it.
"""
