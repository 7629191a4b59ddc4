"""Where a run's shards and workers live: threads (local), virtual time (sim),
processes over gRPC (grpc), Ray actors (ray). Each supplies placement and a
clock; the run itself is ``lab.runner``'s."""
