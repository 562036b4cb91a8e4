#!/usr/bin/env bash
# Submit a job, then follow its events by long-polling with ?after= until it ends.
#   examples/curl/long-poll.sh report.generate '{"title": "Q3", "sections": 3}'
set -euo pipefail
url=${GATEWAY_URL:-http://127.0.0.1:8000}
op=${1:?usage: $0 OP JSON}
body=${2:-"{}"}
# The Location header (/v1/jobs/ID), read from a header dump: works on any curl.
location=$(curl -sS --fail-with-body -D - -o /dev/null \
                -H 'Content-Type: application/json' -d "$body" "$url/v1/ops/$op" |
           sed -n 's/^[Ll]ocation: *//p' | tr -d '\r')
after=0
while :; do
    # Returns as soon as there is an event past $after (or after 30 s with none).
    page=$(curl -sS --fail-with-body "$url$location/events?after=$after&wait=30")
    jq -c '.events[]' <<<"$page"
    after=$(jq '.next' <<<"$page")
    jq -e '[.events[].type] | any(. == "result" or . == "error" or . == "cancelled" or . == "expired")' \
        <<<"$page" >/dev/null && break
done
curl -sS --fail-with-body "$url$location"
echo
