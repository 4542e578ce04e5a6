#!/usr/bin/env bash
# Runs the example shop (examples/shop) on mso's embedded engine, in the foreground.
# Open http://127.0.0.1:8080/ ; Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
MSO_EXTRAS= scripts/setup.sh  # only what running mso needs, not the test tools
exec .venv/bin/mso up examples/shop "$@"
