#!/usr/bin/env bash
# Prepare a RabbitMQ cluster (or a single node) for the gateway, once, on any one node:
# the `gateway` vhost and its policies (definitions.json), and two users.
#
#   GATEWAY_AMQP_PASSWORD=... WORKER_AMQP_PASSWORD=... deploy/rabbitmq/setup.sh
#
# Re-running it is harmless (it updates passwords and policies in place).
#
# The policies in definitions.json (JSON has no comments, so here):
# - gateway-operations, on every queue except gateway.* and amq.* (the operation
#   queues, named <op>): delivery-limit 20 - a request that makes workers crash or
#   requeue it 20 times is dead-lettered, and the gateway fails its job with
#   `delivery_limit` instead of it looping forever (quorum queues only); max-length
#   1,000,000 with reject-publish - a cluster-wide ceiling over the contracts' own
#   x-gateway.max_queue_length (the lower of the two applies; a full queue makes the
#   gateway answer 503 broker_refused); dead-letter-exchange gateway.dead-letter - also for
#   operation queues declared by someone else first.
# - gateway-internal, on gateway.answers and gateway.dead-letters: delivery-limit -1
#   (none). RabbitMQ 4 gives quorum queues a default delivery limit of 20; an answer the
#   gateway has to requeue (its store unreachable for a while) must never be dropped.
#   On RabbitMQ < 4.0 (unlimited already, and -1 is refused), remove this policy.
# - the vhost's default queue type is quorum, for queues declared without a type.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ctl=${RABBITMQCTL:-rabbitmqctl}
: "${GATEWAY_AMQP_PASSWORD:?set GATEWAY_AMQP_PASSWORD}"
: "${WORKER_AMQP_PASSWORD:?set WORKER_AMQP_PASSWORD}"

"$ctl" import_definitions "$here/definitions.json"

user() {  # user NAME PASSWORD: create, or set the password of an existing user
    if "$ctl" -q list_users | awk '{print $1}' | grep -qx "$1"; then
        "$ctl" -q change_password "$1" "$2"
    else
        "$ctl" -q add_user "$1" "$2"
    fi
}

# The gateway declares the operation queues, the answers and dead-letter queues and the
# cancel exchange: it needs every permission in its vhost.
user gateway "$GATEWAY_AMQP_PASSWORD"
"$ctl" -q set_permissions -p gateway gateway '.*' '.*' '.*'
# Workers consume operation queues, publish answers to the default exchange and bind a
# queue of their own to gateway.cancel. Narrow these to your operations' names if
# several teams share the vhost.
user worker "$WORKER_AMQP_PASSWORD"
"$ctl" -q set_permissions -p gateway worker '.*' '.*' '.*'

echo "vhost gateway ready: amqp://gateway:...@<node>:5672/gateway (gateway), amqp://worker:...@<node>:5672/gateway (workers)" >&2
