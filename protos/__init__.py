"""The wire contract (ps.proto) and its generated stubs; regenerate with `make protos`."""

# How every client of a shard connects (the workers', the evaluator's, the
# health check's). gRPC waits a second, then longer, before it connects again
# to an address that refused it: a shard that starts or restarts is seen
# within 100 ms instead.
CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
                   ("grpc.max_reconnect_backoff_ms", 100))
