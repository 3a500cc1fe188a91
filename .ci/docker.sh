#!/usr/bin/env bash
# Make a Docker daemon and the fluster base image available, for the docker tests. Idempotent and quick when
# everything is already there. Runs as root on a machine without systemd (see docs/isolation.md):
#   1. apt-installs docker.io and busybox-static when missing,
#   2. starts dockerd in the background (no iptables, no bridge: fluster uses the host network) when
#      `docker info` fails, and waits for it,
#   3. builds the base image (python -m fluster.worker.image) when it is missing.
# Environment: FLUSTER_IMAGE (default fluster-base:py311), DOCKERD_LOG (default $TMPDIR/dockerd.log).
set -euo pipefail

cd "$(dirname "$0")/.."
IMAGE="${FLUSTER_IMAGE:-fluster-base:py311}"
DOCKERD_LOG="${DOCKERD_LOG:-${TMPDIR:-/tmp}/dockerd.log}"
PYTHON="${PYTHON:-python3}"

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
[ -x /bin/busybox ] || missing+=(busybox-static)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "docker.sh: installing ${missing[*]}" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! docker info >/dev/null 2>&1; then
    echo "docker.sh: starting dockerd (log: $DOCKERD_LOG)" >&2
    nohup dockerd --iptables=false --bridge=none >"$DOCKERD_LOG" 2>&1 &
    for _ in $(seq 600); do
        docker info >/dev/null 2>&1 && break
        sleep 0.1
    done
    if ! docker info >/dev/null 2>&1; then
        echo "docker.sh: dockerd did not come up within 60 s; its log:" >&2
        tail -n 30 "$DOCKERD_LOG" >&2
        exit 1
    fi
fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "docker.sh: building $IMAGE" >&2
    "$PYTHON" -m fluster.worker.image --image "$IMAGE"
fi
