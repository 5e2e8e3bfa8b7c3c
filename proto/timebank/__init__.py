"""The wire contract of the federated time-bank exchange (package ``timebank.v1``).

Also the small shared code that gives the contract meaning: minute arithmetic
today; envelope signing and Merkle proofs as the protocol grows.
"""
