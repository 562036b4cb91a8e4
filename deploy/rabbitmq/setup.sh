#!/usr/bin/env bash
# Prepare a RabbitMQ cluster (or a single node) for the gateway, on any one node: a
# virtual host with the gateway's policies, the gateway's broker user, and one
# least-privilege broker user per group of operations for the workers.
#
#   deploy/rabbitmq/setup.sh worker-math:math.add,math.mul worker-reports:report.generate
#   WORKER_USERS="worker-math:math.add,math.mul worker-reports:report.*" deploy/rabbitmq/setup.sh
#
# Each argument (or word of WORKER_USERS) is USER:OP[,OP...]; an OP may end in * (every
# operation with that prefix). At the end the script prints the GATEWAY_WORKER_USERS line
# that tells the gateway which user answers which operations (--worker-users).
#
# Settings (environment):
#   GATEWAY_VHOST   the virtual host (default gateway)
#   GATEWAY_USER    the gateway's broker user (default gateway)
#   RABBITMQCTL     the rabbitmqctl command (default rabbitmqctl)
# Passwords: GATEWAY_AMQP_PASSWORD for the gateway's user; AMQP_PASSWORD_<USER> for a
# worker user, <USER> upper-cased with every character but A-Z and 0-9 made `_`
# (worker-math: AMQP_PASSWORD_WORKER_MATH). A user that does not exist yet and has no
# password given gets a random one, printed once on stdout ("password for USER: ...");
# an existing user keeps its password unless one is given.
#
# Re-running it is harmless: the vhost is kept, policies, permissions and given passwords
# are set again in place.
#
# Permissions (RabbitMQ checks configure/write/read per exchange or queue name; the
# default exchange is `amq.default`):
# - the gateway owns the topology (operation queues named by its contracts, gateway.*), so
#   it holds every permission in this vhost, and nothing anywhere else;
# - a worker user: configure only server-named queues `amq.gen-*` (its exclusive queue for
#   cancel notices); write `amq.default` (its answers) and `amq.gen-*` (queue.bind needs
#   write on the queue); read its operations' queues, `gateway.cancel` (binding to it) and
#   `amq.gen-*` (consuming its own queue). Declaring the operation queues and
#   gateway.cancel passively needs no permission (gateway/worker.py does just that).
# What this cannot stop: write on `amq.default` reaches ANY queue by name, so a worker
# user can still put messages into gateway.answers, gateway.dead-letters or another
# operation's queue. The gateway drops dead letters it did not publish, and with
# --worker-users answers from users not listed for the job's operation; RabbitMQ
# guarantees the `user_id` that tells them apart. SECURITY.md says what remains.
#
# The policies (the same as definitions.json, which deploy/compose.yaml loads through the
# management API on RabbitMQ 4):
# - gateway-operations, on every queue except gateway.* and amq.* (the operation
#   queues, named <op>): delivery-limit 20 - a request that makes workers crash or
#   requeue it 20 times is dead-lettered, and the gateway fails its job with
#   `delivery_limit` instead of it looping forever (quorum queues only); max-length
#   1,000,000 with reject-publish - a cluster-wide ceiling over the contracts' own
#   x-gateway.max_queue_length (the lower of the two applies; a full queue makes the
#   gateway answer 503 broker_refused); dead-letter-exchange gateway.dead-letter - also for
#   operation queues declared by someone else first.
# - gateway-internal, on gateway.answers and gateway.dead-letters, on RabbitMQ >= 4.0 only:
#   delivery-limit -1 (none). RabbitMQ 4 gives quorum queues a default delivery limit of
#   20; an answer the gateway has to requeue (its store unreachable for a while) must
#   never be dropped. Before 4.0 there is no limit by default, and -1 is refused.
# - the vhost's default queue type is quorum, for queues declared without a type.
set -euo pipefail
ctl=${RABBITMQCTL:-rabbitmqctl}
vhost=${GATEWAY_VHOST:-gateway}
gateway_user=${GATEWAY_USER:-gateway}
if [ "$#" -gt 0 ]; then specs=("$@"); else read -ra specs <<<"${WORKER_USERS:-}"; fi

die() { echo "setup.sh: $*" >&2; exit 2; }
name_ok() { [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; }

name_ok "$vhost" || die "GATEWAY_VHOST: $vhost is not a plain name"
name_ok "$gateway_user" || die "GATEWAY_USER: $gateway_user is not a plain name"
for spec in "${specs[@]}"; do
    [[ $spec =~ ^[A-Za-z0-9][A-Za-z0-9._-]*:[A-Za-z0-9*][A-Za-z0-9._*,-]*$ ]] ||
        die "$spec is not USER:OP[,OP...]"
    [ "${spec%%:*}" != "$gateway_user" ] || die "$spec: workers need a user of their own"
done

version=$("$ctl" -q status --formatter json | grep -o '"rabbitmq_version":"[^"]*"' | cut -d'"' -f4)
[ -n "$version" ] || die "cannot tell the RabbitMQ version from '$ctl status'"
major=${version%%.*}

# The vhost and its policies.
if ! "$ctl" -q list_vhosts name | grep -qxF "$vhost"; then
    "$ctl" -q add_vhost "$vhost" --default-queue-type quorum \
        --description "HTTP gateway: one queue per operation, gateway.* internals"
fi
"$ctl" -q set_policy -p "$vhost" --apply-to queues --priority 0 gateway-operations \
    '^(?!gateway\.|amq\.)' \
    '{"delivery-limit": 20, "max-length": 1000000, "overflow": "reject-publish", "dead-letter-exchange": "gateway.dead-letter"}'
if [ "$major" -ge 4 ]; then
    "$ctl" -q set_policy -p "$vhost" --apply-to queues --priority 1 gateway-internal \
        '^gateway\.(answers|dead-letters)$' '{"delivery-limit": -1}'
fi

user() {  # user NAME: create it, or set the password of an existing one if one is given
    local name=$1 variable=$2 password
    password=${!variable:-}
    if "$ctl" -q list_users | awk '{print $1}' | grep -qxF "$name"; then
        if [ -n "$password" ]; then "$ctl" -q change_password "$name" "$password"; fi
    else
        if [ -z "$password" ]; then
            # URL-safe, so that it can go into an amqp:// URL as it is.
            password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
            echo "password for $name: $password"
        fi
        "$ctl" -q add_user "$name" "$password"
    fi
}

user "$gateway_user" GATEWAY_AMQP_PASSWORD
"$ctl" -q set_permissions -p "$vhost" "$gateway_user" '.*' '.*' '.*'

worker_users=()
for spec in "${specs[@]}"; do
    name=${spec%%:*}
    ops=${spec#*:}
    variable=AMQP_PASSWORD_$(printf %s "$name" | tr '[:lower:]' '[:upper:]' | tr -c 'A-Z0-9' '_')
    user "$name" "$variable"
    # Operation names as a regular expression: dots literal, a trailing * any suffix.
    queues=$(printf %s "$ops" | sed -e 's/\./\\./g' -e 's/\*/.*/g' -e 's/,/|/g')
    "$ctl" -q set_permissions -p "$vhost" "$name" \
        '^amq\.gen-.*$' \
        '^(amq\.default|amq\.gen-.*)$' \
        "^($queues|gateway\\.cancel|amq\\.gen-.*)\$"
    IFS=, read -ra list <<<"$ops"
    for op in "${list[@]}"; do worker_users+=("$op=$name"); done
done

if "$ctl" -q list_permissions -p "$vhost" | awk '{print $1}' | grep -qxF worker &&
    [[ " ${specs[*]} " != *" worker:"* ]]; then
    echo "setup.sh: the user 'worker' (from an older setup.sh) still has permissions in" \
        "$vhost; remove them once your workers use their own users:" \
        "$ctl clear_permissions -p $vhost worker" >&2
fi

echo "vhost $vhost ready (RabbitMQ $version): the gateway connects as" \
    "amqp://$gateway_user:...@<node>:5672/$vhost, each worker as its own user" >&2
if [ "${#worker_users[@]}" -gt 0 ]; then
    # One entry per operation, in the form the gateway's --worker-users takes.
    merged=$(printf '%s\n' "${worker_users[@]}" | awk -F= '
        { if ($1 in users) users[$1] = users[$1] "," $2; else { order[++n] = $1; users[$1] = $2 } }
        END { for (i = 1; i <= n; i++) printf "%s%s=%s", (i > 1 ? " " : ""), order[i], users[order[i]] }')
    echo "GATEWAY_WORKER_USERS=\"$merged\""
else
    echo "setup.sh: no worker users given (USER:OP[,OP...] arguments or WORKER_USERS)" >&2
fi
