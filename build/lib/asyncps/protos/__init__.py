"""The wire contract (ps.proto) and its generated stubs; regenerate with `make protos`."""

# The largest message a shard or a client accepts: a shard's part of the
# parameters up to 8 MiB in one Exchange message, and its header. Larger parts
# stream in chunks.
MAX_MESSAGE_BYTES = (8 << 20) + (64 << 10)
MESSAGE_OPTIONS = (("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES))

# How every client of a shard connects (the workers', the evaluator's, the
# health check's). gRPC waits a second, then longer, before it connects again
# to an address that refused it: a shard that starts or restarts is seen
# within 100 ms instead.
CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
                   ("grpc.max_reconnect_backoff_ms", 100), *MESSAGE_OPTIONS)
