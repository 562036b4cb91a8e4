#!/usr/bin/env bash
# Submit a job and wait for its result in the same request.
#   examples/curl/submit-and-wait.sh math.add '{"a": 2, "b": 3}'
set -euo pipefail
url=${GATEWAY_URL:-http://127.0.0.1:8000}
op=${1:?usage: $0 OP JSON}
body=${2:-"{}"}
# 200 with the finished job if it ends within 30 s, else 202 with the queued job.
curl -sS --fail-with-body -H 'Content-Type: application/json' -d "$body" \
     "$url/v1/ops/$op?wait=30"
echo
