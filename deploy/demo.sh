#!/usr/bin/env bash
# `make demo`: the main job on the embedded stack, start to finish, on one machine.
# Today: start the stack; register the built-in tiny model and show the registry's checks; register
# the reference SLM (all-MiniLM-L6-v2) and let the optimizer find and register its best variant for
# a Raspberry Pi 5 and for a small gateway; show the lineage; stop. It grows as services land.
set -euo pipefail

export SLMOPS_HOME="${SLMOPS_HOME:-$PWD/.slmops}"
work="$(mktemp -d)"
cleanup() { slmops down >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "start the embedded stack (nats-server, S3, services) on free loopback ports"
slmops up --detach --nats-port 0 --s3-port 0

step "write the built-in tiny embedding model and its evaluation set"
slmops model sample "$work"

step "register it (upload, validate, sign, record)"
slmops model push "$work/tiny-embedder.onnx" --name tiny-embedder --version 1.0.0 \
  --eval-set "$work/tiny-embedder-eval.npz" --label task=sentence-embedding

step "pushing the same bytes again is a no-op; a corrupt file is refused with a reason"
slmops model push "$work/tiny-embedder.onnx" --name tiny-embedder --version 1.0.0
head -c 4096 "$work/tiny-embedder.onnx" > "$work/truncated.onnx"
slmops model push "$work/truncated.onnx" --name tiny-embedder --version 1.0.1 || echo "(refused, as it should be)"

step "mark it stable"
slmops model alias tiny-embedder stable 1.0.0

step "the reference SLM: all-MiniLM-L6-v2 (22.7M parameters), built as ONNX from its safetensors"
slmops model sample --minilm "$work"
slmops model push "$work/all-minilm-l6-v2.onnx" --name all-minilm-l6-v2 --version 1.0.0 \
  --eval-set "$work/all-minilm-l6-v2-eval.npz" --label task=sentence-embedding

step "optimize it for a Raspberry Pi 5 (budgets: deploy/profiles/rpi5.yaml)"
slmops optimize all-minilm-l6-v2 1.0.0 --profile rpi5 --watch

step "and for a gateway with little flash (deploy/profiles/gateway.yaml)"
slmops optimize all-minilm-l6-v2 1.0.0 --profile gateway --watch

step "the registry now holds the variants with their lineage"
slmops model list
slmops model show all-minilm-l6-v2 1.0.0

step "stop"
slmops down
trap - EXIT
rm -rf "$work"
echo "demo finished."
