"""The clearinghouse's gRPC layer: ``timebank.v1.ClearinghouseService``."""
