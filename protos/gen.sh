#!/usr/bin/env bash
# Regenerate the committed stubs from ps.proto: `make protos`.
# The stubs import each other as the installed package names them (`from asyncps.protos import ps_pb2`), so
# protoc reads the proto as asyncps/protos/ps.proto: through a link named asyncps to the repository, in a
# scratch directory. With an argument, the stubs go to that directory instead of protos/ (the stale-stubs test).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/protos}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
ln -s "$root" "$scratch/asyncps"
mkdir -p "$scratch/out" "$out"
"${PYTHON:-python3}" -m grpc_tools.protoc -I"$scratch" --python_out="$scratch/out" --pyi_out="$scratch/out" \
    --grpc_python_out="$scratch/out" "$scratch/asyncps/protos/ps.proto"
cp "$scratch/out/asyncps/protos/"ps_pb2{.py,.pyi,_grpc.py} "$out/"
