"""A district node: the local ledger, people, the service loop and its API.

Layers, each readable on its own: ``node.domain`` (pure rules, no I/O) →
``node.storage`` (SQLAlchemy) → ``node.usecases`` (one transaction each) →
``node.api`` (gRPC) → ``node.cli``.
"""
