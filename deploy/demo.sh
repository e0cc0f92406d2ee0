#!/usr/bin/env bash
# `make demo`: the main job on the embedded stack, start to finish, on one machine.
# Today: start the stack, register the built-in tiny model (with its evaluation set), list and
# show it, point the `stable` alias at it, and stop. It grows as services land.
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

step "mark it stable, list and show"
slmops model alias tiny-embedder stable 1.0.0
slmops model list
slmops model show tiny-embedder stable

step "stop"
slmops down
trap - EXIT
rm -rf "$work"
echo "demo finished."
