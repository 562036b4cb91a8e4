#!/usr/bin/env bash
# Submit a job, then watch its events live as Server-Sent Events; curl exits when the
# stream ends after the terminal event.
#   examples/curl/stream.sh report.generate '{"title": "Q3", "sections": 3}'
set -euo pipefail
url=${GATEWAY_URL:-http://127.0.0.1:8000}
op=${1:?usage: $0 OP JSON}
body=${2:-"{}"}
location=$(curl -sS --fail-with-body -o /dev/null -w '%header{location}' \
                -H 'Content-Type: application/json' -d "$body" "$url/v1/ops/$op")
# -N: print each event as it arrives. To resume after a drop, add
# -H "Last-Event-ID: <the last id: you saw>".
curl -sS -N -H 'Accept: text/event-stream' "$url$location/events"
