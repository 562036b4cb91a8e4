#!/usr/bin/env bash
# A project-local RabbitMQ node: its own data dir, ports and Erlang cookie, so it never
# touches a system RabbitMQ. Used by `make run` and by the test harness; runnable by hand.
#
#   deploy/rabbitmq-local.sh install   # apt-get install rabbitmq-server (when root and missing)
#   deploy/rabbitmq-local.sh start     # start the node (in a session of its own); wait until it serves
#   deploy/rabbitmq-local.sh stop      # stop it (graceful), and its epmd: nothing is left running
#   deploy/rabbitmq-local.sh status    # exit 0 when the node runs (starts nothing)
#   deploy/rabbitmq-local.sh url       # print the AMQP URL of the node
#   deploy/rabbitmq-local.sh ctl ARGS  # rabbitmqctl ARGS against the node
#
# Settings (environment): RABBITMQ_LOCAL_DIR (default var/rabbitmq), RABBITMQ_LOCAL_PORT
# (AMQP, default 5673), RABBITMQ_LOCAL_DIST_PORT (default AMQP+20000),
# RABBITMQ_LOCAL_EPMD_PORT (default 4370), RABBITMQ_LOCAL_NODENAME (default gateway-dev).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
dir=${RABBITMQ_LOCAL_DIR:-$root/var/rabbitmq}
case $dir in /*) ;; *) dir=$PWD/$dir ;; esac  # absolute: running() finds it in the VM's arguments
port=${RABBITMQ_LOCAL_PORT:-5673}
dist_port=${RABBITMQ_LOCAL_DIST_PORT:-$((port + 20000))}
epmd_port=${RABBITMQ_LOCAL_EPMD_PORT:-4370}
name=${RABBITMQ_LOCAL_NODENAME:-gateway-dev}
bin=/usr/lib/rabbitmq/bin

# Debian's /usr/sbin wrappers switch root to the rabbitmq user, who cannot read a
# root-owned data dir; the scripts in /usr/lib/rabbitmq/bin run as the caller.
node_env() {
    mkdir -p "$dir/mnesia" "$dir/log"
    [ -f "$dir/enabled_plugins" ] || echo '[].' >"$dir/enabled_plugins"
    [ -f "$dir/rabbitmq.conf" ] || cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$port
loopback_users.guest = true
log.console = false
log.file.level = warning
CONF
    export HOME=$dir   # the Erlang cookie lives here, shared by server and rabbitmqctl
    export RABBITMQ_NODENAME=$name@localhost
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=$port
    export RABBITMQ_DIST_PORT=$dist_port
    export ERL_EPMD_PORT=$epmd_port
    export ERL_EPMD_ADDRESS=127.0.0.1
    # Inter-node (clustering) traffic on loopback only, like AMQP.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export RABBITMQ_MNESIA_BASE=$dir/mnesia
    export RABBITMQ_LOG_BASE=$dir/log
    export RABBITMQ_PID_FILE=$dir/rabbitmq.pid
    export RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf
    export RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config
    export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
    export RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf
    export ERL_CRASH_DUMP=$dir/log/erl_crash.dump  # a failed start's dump: not in the caller's cwd
}

install() {
    [ -x "$bin/rabbitmq-server" ] && return 0
    echo "installing rabbitmq-server from the distribution's packages ..." >&2
    # The package may start a system node; ours uses other ports and does not disturb it.
    "$here/install-system-deps.sh" rabbitmq-server >&2
}

# Is this directory's node alive? Asked of its pid file and /proc (the VM runs with
# `-home $dir`), not of rabbitmqctl: its Erlang VM would start an epmd when none is there.
running() {
    local pid
    pid=$(cat "$dir/rabbitmq.pid" 2>/dev/null) && [ -n "$pid" ] || return 1
    tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | grep -qxF -- "$dir"
}

status() {
    node_env
    running && "$bin/rabbitmqctl" -q status >/dev/null 2>&1
}

start() {
    install
    node_env
    if status; then echo "RabbitMQ node $RABBITMQ_NODENAME already running on port $port" >&2; return 0; fi
    rm -f "$RABBITMQ_PID_FILE"
    # A session of its own: a process-group kill of the caller (Ctrl-C, or killing
    # `make run`'s group) leaves the node up; `stop` ends it. RABBITMQ_LOCAL_ATTACHED=1
    # (the test harness) keeps it in the caller's group instead, so that a test run
    # killed as a whole leaves no node behind.
    detach=setsid
    [ "${RABBITMQ_LOCAL_ATTACHED:-}" = 1 ] && detach=
    $detach nohup "$bin/rabbitmq-server" >"$dir/log/console.log" 2>&1 </dev/null &
    if ! "$bin/rabbitmqctl" -q wait --timeout 120 "$RABBITMQ_PID_FILE" >/dev/null 2>&1; then
        echo "RabbitMQ did not start; see $dir/log/" >&2
        tail -n 30 "$dir/log/console.log" >&2 || true
        exit 1
    fi
    echo "RabbitMQ node $RABBITMQ_NODENAME serving amqp://guest:guest@127.0.0.1:$port/ (data in $dir)" >&2
}

stop() {
    node_env
    # `stop PID_FILE` returns once the VM has exited.
    if running; then "$bin/rabbitmqctl" -q stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 || true; fi
    # epmd outlives the VMs that started it (the node's, or rabbitmqctl's): end the one on
    # this node's private port, and so never another node's. It refuses while a node is
    # still registered with it, which the one just stopped may be for a moment: retry a bit.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        epmd -port "$epmd_port" -names >/dev/null 2>&1 || break  # none there (starts none)
        epmd -port "$epmd_port" -kill >/dev/null 2>&1 || true
        sleep 0.2
    done
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    url) echo "amqp://guest:guest@127.0.0.1:$port/" ;;
    ctl) shift; node_env; "$bin/rabbitmqctl" "$@" ;;
    *) sed -n '2,16p' "$0" >&2; exit 2 ;;
esac
