#!/usr/bin/env bash
# Submit a job, then watch its events live as Server-Sent Events; curl exits when the
# stream ends after the terminal event.
#   examples/curl/stream.sh report.generate '{"title": "Q3", "sections": 3}'
set -euo pipefail
url=${GATEWAY_URL:-http://127.0.0.1:8000}
op=${1:?usage: $0 OP JSON}
body=${2:-"{}"}
# The Location header (/v1/jobs/ID), read from a header dump: works on any curl.
location=$(curl -sS --fail-with-body -D - -o /dev/null \
                -H 'Content-Type: application/json' -d "$body" "$url/v1/ops/$op" |
           sed -n 's/^[Ll]ocation: *//p' | tr -d '\r')
# -N: print each event as it arrives. To resume after a drop, add
# -H "Last-Event-ID: <the last id: you saw>".
curl -sS -N -H 'Accept: text/event-stream' "$url$location/events"
