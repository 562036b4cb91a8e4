#!/usr/bin/env bash
# Follow a topic until interrupted: as Server-Sent Events (id: <seq>, event: message,
# data: <the message>), or with --poll as a long-poll loop printing one JSON event a line.
#   examples/curl/topic-subscribe.sh chat.room.lobby        # from the next message on
#   examples/curl/topic-subscribe.sh chat.room.lobby 0      # everything retained, then live
#   examples/curl/topic-subscribe.sh --poll chat.room 0     # every room (the whole family)
# A topic that is a contract name (chat.room) gives every key below it; chat.room.lobby
# that key only. To resume after a drop, pass the last seq (the last id:) you saw as AFTER.
# With auth on, set GATEWAY_TOKEN to an API key with the scope topics:subscribe:<topic>.
set -euo pipefail
url=${GATEWAY_URL:-http://127.0.0.1:8000}
poll=no
if [ "${1:-}" = --poll ]; then poll=yes; shift; fi
topic=${1:?usage: $0 [--poll] TOPIC [AFTER]}
after=${2:-}
auth=()
[ -n "${GATEWAY_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $GATEWAY_TOKEN")
events="$url/v1/topics/$topic/events"

if [ "$poll" = no ]; then
    # -N: print each event as it arrives. The stream never ends by itself.
    exec curl -sS -N --fail-with-body "${auth[@]}" -H 'Accept: text/event-stream' \
         "$events${after:+?after=$after}"
fi

if [ -z "$after" ]; then
    # No AFTER: from the next message on. The first long-poll waits for it and its
    # answer's "next" is the cursor from then on.
    query="wait=30"
else
    query="after=$after&wait=30"
fi
while :; do
    # Returns as soon as there is a message past the cursor (or after 30 s with none).
    page=$(curl -sS --fail-with-body "${auth[@]}" "$events?$query")
    jq -c '.events[]' <<<"$page"
    query="after=$(jq '.next' <<<"$page")&wait=30"
done
