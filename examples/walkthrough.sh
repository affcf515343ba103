#!/usr/bin/env bash
# A short walk through the registry on a local folder: publish two versions, promote, show,
# roll back, read the history. Run it with `make demo` (which puts modelswap on PATH).
# The full story with agent, loader and gate replaces this once those land (see the issues).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export MODELSWAP_REGISTRY="${MODELSWAP_REGISTRY:-$here/demo-registry}"
export MODELSWAP_ACTOR="${MODELSWAP_ACTOR:-demo@$(hostname)}"
model="classifier-$(date +%s)"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

head -c 200000 /dev/urandom > "$work/model.onnx"
echo "registry: $MODELSWAP_REGISTRY   model: $model"
step modelswap publish "$model" "$work/model.onnx" --metric validation_accuracy=0.9350 \
    --training-data "s3://datasets/digits/2026-11-01" --notes "baseline"
head -c 200000 /dev/urandom > "$work/model.onnx"
step modelswap publish "$model" "$work/model.onnx" --metric validation_accuracy=0.9400 \
    --training-data "s3://datasets/digits/2026-11-20" --notes "more data"
step modelswap promote "$model" v1 --reason "first release"
step modelswap promote "$model" v2 --reason "better on the eval set"
step modelswap versions "$model"
step modelswap show "$model"
step modelswap diff "$model" v1 v2
step modelswap rollback "$model" --reason "latency regression in production"
step modelswap history "$model"
step modelswap verify "$model"
printf '\nThe pointer is one small object; the fleet follows it:\n'
step cat "$MODELSWAP_REGISTRY/$model/CURRENT"
