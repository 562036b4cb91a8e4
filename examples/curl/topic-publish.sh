#!/usr/bin/env bash
# Publish one message to a topic; prints {"topic", "message_id"} once RabbitMQ has it.
# A message against the topic's contract gets a 422 with the details (and exit status 22).
#   examples/curl/topic-publish.sh chat.room.lobby '{"from": "ann", "text": "hello"}'
# With auth on, set GATEWAY_TOKEN to an API key with the scope topics:publish:<topic>.
set -euo pipefail
url=${GATEWAY_URL:-http://127.0.0.1:8000}
topic=${1:?usage: $0 TOPIC JSON}
body=${2:?usage: $0 TOPIC JSON}
auth=()
[ -n "${GATEWAY_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $GATEWAY_TOKEN")
curl -sS --fail-with-body "${auth[@]}" -H 'Content-Type: application/json' -d "$body" \
     "$url/v1/topics/$topic"
echo
