"""The node's link to the city clearinghouse (ADR 0005, 0006, 0007, 0013): four workers
beside the gRPC server, each a thread, each its own module.

- ``sender``: signs and submits the outbox, checks every receipt, applies it;
- ``subscriber``: keeps the Subscribe stream open, applies deliveries, acknowledges them
  (through a bounded queue: a slow database slows the stream, not memory);
- ``witness``: cosigns the clearinghouse's tree heads that extend the last one verified;
- ``checkpointer``: anchors the node's ledger in the log on a schedule.

``clearing_link.ClearingLink`` owns the one channel and starts and stops them. What the
clearinghouse shows is checked by ``timebank.trusted_log.TrustedLog``, the checks every
reader of the log makes; the sender and the witness share one view of it
(``verified_log``).
"""
