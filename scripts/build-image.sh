#!/usr/bin/env bash
# Build the agent image without a Docker daemon (podman), then run it against a local
# SeaweedFS until it links a version. Where public images cannot be pulled, the base is made
# here: debootstrap Debian bookworm (python3, python3-venv) and `podman import` it.
#
#   scripts/build-image.sh            # needs root for debootstrap; apt installs what is missing
#
# RUNTIME=runc is the default because crun refuses hosts with hybrid cgroups; the explicit
# --ulimit values stay within the host's hard limits, which podman's defaults exceed here.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-localhost/modelswap-agent:dev}
RUNTIME=${RUNTIME:-runc}
PY=${PY:-.venv/bin/python}
limits=(--ulimit "nofile=1024:1024" --ulimit "nproc=1024:1024")

need=()
for tool in podman debootstrap "$RUNTIME"; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

if [ -z "${BASE:-}" ]; then
    if podman pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1; then
        BASE=docker.io/library/python:3.11-slim
    else
        BASE=localhost/modelswap-base:bookworm
        if ! podman image exists "$BASE"; then
            echo "== no public base image reachable: building $BASE with debootstrap"
            rootfs=$(mktemp -d)
            debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
                bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
            tar -C "$rootfs" -c . | podman import - "$BASE" >/dev/null
            rm -rf "$rootfs"
        fi
    fi
fi
echo "== base: $BASE"

echo "== wheels for an offline build"
"$PY" -m pip wheel --quiet --wheel-dir wheels ".[agent]" "setuptools>=77" wheel 2>&1 \
    | { grep -v "WARNING: Location" || true; }

echo "== podman build"
podman --runtime "$RUNTIME" build --quiet "${limits[@]}" --network host \
    --build-arg BASE="$BASE" --build-arg PIP_OPTS=--no-index -t "$IMAGE" .
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE"

echo "== run it against a local SeaweedFS"
RUNTIME="$RUNTIME" IMAGE="$IMAGE" "$PY" -m scripts.run_image
