"""Experiments: configuration, runners and backends, reports, and the command line."""
