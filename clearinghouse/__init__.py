"""The city clearinghouse: admission, directory, claims, transparency log, settlement.

It imports the contract (``timebank``) and never the node.
"""
