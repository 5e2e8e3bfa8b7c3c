"""The node's gRPC API: translate messages and errors, nothing else.

``servicer`` maps every rpc of ``timebank.v1.NodeService`` onto a use-case,
``convert`` translates values, ``errors`` turns refusals into statuses, and
``server`` serves it all (plaintext for now; TLS comes with the clearinghouse).
"""
