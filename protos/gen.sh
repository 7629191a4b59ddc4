#!/usr/bin/env bash
# Regenerate the committed stubs from ps.proto: `make protos`.
# Run from the repository root so the generated imports read `from protos import ps_pb2`.
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python3}" -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. protos/ps.proto
