"""Pure rules of a district node: no I/O, no database, no protobuf."""
