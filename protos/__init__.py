"""The wire contract (ps.proto) and its generated stubs; regenerate with `make protos`."""
