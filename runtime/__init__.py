"""The service runtime that the node and the clearinghouse share (ADR 0010).

What a long-running service of this project needs and the wire contract does not: the
error base and its gRPC status mapping, database engines with one writer at a time,
migrations, clocks, locks and process settings. Both services import it; it imports
neither, and the contract (``timebank``) never imports it.
"""
