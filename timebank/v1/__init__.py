"""Generated protobuf and gRPC code for timebank.v1 (see scripts/gen_proto.py)."""
