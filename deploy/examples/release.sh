#!/usr/bin/env bash
# What a CI job runs to release a new version of a model to the fleet, and nothing else:
#
#   deploy/examples/release.sh MODEL.onnx EVAL.npz VERSION
#
# It pushes the version with the alias `candidate`. The blueprint that tracks `candidate`
# (deploy/examples/blueprint.yaml, applied once with `slmops apply -f`) does the rest on its own:
# builds each device class's variant with the class's profile, rolls it out in gated, class-
# stratified waves, reverts it if a gate fails, and promotes it to `stable` once every wave passed.
# The job waits for that outcome and fails with the reason if the version did not reach the fleet.
#
# Environment: MODEL (default tiny-embedder), BLUEPRINT (default demo-fleet), TIMEOUT seconds
# (default 900); the slmops settings (SLMOPS_HOME for the embedded stack, or SLMOPS_NATS_URL,
# SLMOPS_NATS_CREDS and the S3 settings for a deployment).
set -euo pipefail

if [ "$#" -ne 3 ]; then
  echo "usage: $0 MODEL.onnx EVAL.npz VERSION" >&2
  exit 2
fi
model_file="$1" eval_set="$2" version="$3"

slmops model push "$model_file" --name "${MODEL:-tiny-embedder}" --version "$version" \
  --eval-set "$eval_set" --label "git=${GIT_COMMIT:-unknown}" --alias candidate
slmops blueprint wait "${BLUEPRINT:-demo-fleet}" --version "$version" --timeout "${TIMEOUT:-900}"
