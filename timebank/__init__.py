"""The wire contract of the federated time-bank exchange (package ``timebank.v1``).

The generated messages and services, and the small pure code that gives them meaning
and that anyone verifying the city needs: minute arithmetic, keys, envelope signing,
Merkle hashing and proofs, signed checkpoints and the transparency log's leaves. It
imports no service and runs nothing; the ``.proto`` sources are in ``proto/``.
"""
