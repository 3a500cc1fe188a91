#!/usr/bin/env bash
# Build fluster's Docker base image from this machine's own CPython, with no image registry (docs/isolation.md).
# Arguments go to `python -m fluster.worker.image`: --image TAG (default fluster-base:py3XX), --force.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m fluster.worker.image "$@"
