"""The city policy as this node runs it.

The policy's *format* (its settings, how a TOML text is parsed and checked, its digest)
is the contract's, ``timebank.policy``, so that the clearinghouse validates a policy
before the city signs it with the very rules every node applies. This module names
those types for the node's domain, which decides with them (payments, caps, the
publicity period); which policy is in force at a given time is the use-case layer's
(``node.usecases.policies``).
"""

from timebank.policy import (
    DEFAULT_CATEGORIES,
    DEFAULT_POLICY_TOML,
    MAX_CATEGORIES,
    MAX_ORDER_MINUTES,
    MAX_POLICY_BYTES,
    Category,
    Policy,
    PolicyError,
    Relation,
    load_policy,
    policy_sha256,
    short_digest,
)

__all__ = ["DEFAULT_CATEGORIES", "DEFAULT_POLICY_TOML", "MAX_CATEGORIES", "MAX_ORDER_MINUTES",
           "MAX_POLICY_BYTES", "Category", "Policy", "PolicyError", "Relation", "load_policy",
           "policy_sha256", "short_digest"]
