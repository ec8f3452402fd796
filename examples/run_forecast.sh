#!/usr/bin/env bash
# Run examples/forecast.py on distpool: start a local worker, run the job, stop the worker.
# Needs a Redis server on 127.0.0.1:6379 (the default broker), or DISTPOOL_BROKER_URL.
set -euo pipefail
cd "$(dirname "$0")"
logfile=$(mktemp)
distpool worker --concurrency 2 >"$logfile" 2>&1 &
worker=$!
trap 'kill -TERM "$worker" 2>/dev/null; wait "$worker" 2>/dev/null || true; rm -f "$logfile"' EXIT
python forecast.py
