#!/usr/bin/env bash
# `make run`: RabbitMQ (yours, if GATEWAY_BROKER_URL reaches one; else a project-local
# node), the gateway on GATEWAY_PORT (default 8000) serving its console at /console/, the chat example
# (examples/chat/) at /chat/, the example workers (Python, Perl, Node) and the chat daemon, and the browser
# example (examples/browser/) on GATEWAY_EXAMPLE_PORT (default 8001), whose origin is added
# to GATEWAY_CORS_ORIGINS. Ctrl-C (or killing this script's process group) stops the
# gateway, workers and example; the local node keeps running in a session of its own
# (deploy/rabbitmq-local.sh stop ends it).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
port=${GATEWAY_PORT:-8000}
example_port=${GATEWAY_EXAMPLE_PORT:-8001}
example_url="http://127.0.0.1:$example_port/"
# The page's origin, by either name a browser may use for it, on top of the caller's.
export GATEWAY_CORS_ORIGINS="${GATEWAY_CORS_ORIGINS:+$GATEWAY_CORS_ORIGINS }http://127.0.0.1:$example_port http://localhost:$example_port"

reachable() {  # is there an AMQP listener at this URL?
    "$bin/python" - "$1" <<'PY'
import socket, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
try:
    socket.create_connection((u.hostname or "127.0.0.1", u.port or 5672), timeout=2).close()
except OSError:
    sys.exit(1)
PY
}

if [ -n "${GATEWAY_BROKER_URL:-}" ] && reachable "$GATEWAY_BROKER_URL"; then
    echo "using RabbitMQ at GATEWAY_BROKER_URL" >&2
else
    [ -n "${GATEWAY_BROKER_URL:-}" ] && echo "GATEWAY_BROKER_URL is not reachable; starting a local node" >&2
    deploy/rabbitmq-local.sh start
    GATEWAY_BROKER_URL=$(deploy/rabbitmq-local.sh url)
    # A virtual host serves the gateways of one job store (README, "More than one
    # machine"). A fresh default store takes this project-local node over from the last.
    if [ -z "${GATEWAY_STORE:-}" ] && [ ! -e var/gateway.sqlite3 ]; then
        deploy/rabbitmq-local.sh ctl -q delete_queue gateway.store >/dev/null 2>&1 || true
    fi
fi
export GATEWAY_BROKER_URL

pids=()
extras=()  # stopped with the rest, but their end does not end `make run`
cleanup() { kill "${pids[@]}" "${extras[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# The chat example's page is served by the gateway itself: same origin as /v1/topics.
"$bin/gateway" serve --port "$port" --static /chat=examples/chat &
pids+=($!)
for worker in examples/workers/math_add.py examples/workers/report_generate.py examples/workers/echo.py; do
    "$bin/python" "$worker" &
    pids+=($!)
done
# The Perl worker for text.upper, and the Perl daemon in the chat rooms (it answers
# "/upper text"); their modules come with `make setup`.
perl_ok=no
if perl -MAnyEvent::RabbitMQ -e1 2>/dev/null; then
    perl_ok=yes
    for daemon in examples/perl/text_upper.pl examples/perl/chat_daemon.pl; do
        perl "$daemon" &
        pids+=($!)
    done
fi

# The JavaScript worker for text.stats, on the Node kit in clients/js (whose amqplib
# `make setup` installs: the kit resolves it from clients/js/node_modules).
if command -v node >/dev/null 2>&1 && [ -d clients/js/node_modules/amqplib ]; then
    node examples/workers/text_stats.mjs &
    pids+=($!)
fi

# The browser example: the page and the JS client, on a port (an origin) of their own.
"$bin/python" examples/browser/serve.py --port "$example_port" --gateway "http://127.0.0.1:$port" &
extras+=($!)

ready=no
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && ready=yes && break
    sleep 0.2
done
if [ "$ready" = no ]; then
    echo "The gateway is not ready yet; it says:" >&2
    curl -sS "http://127.0.0.1:$port/readyz" >&2 || true
    echo >&2
fi
if [ "$perl_ok" = yes ]; then
    chat_bot="Say \"/upper some text\" there and the Perl daemon (examples/perl/chat_daemon.pl) answers."
else
    chat_bot="(No Perl daemon in the rooms: AnyEvent::RabbitMQ is missing; make setup installs it.)"
fi
cat <<MSG

The gateway is up on http://127.0.0.1:$port with workers for math.add, report.generate
and echo (Python), text.upper (Perl) and text.stats (JavaScript).
The console (operations, a form for each, jobs live, topics): http://127.0.0.1:$port/console/
Try:
  curl -s -H 'Content-Type: application/json' -d '{"a": 2, "b": 3}' 'http://127.0.0.1:$port/v1/ops/math.add?wait=5'
  curl -s -H 'Content-Type: application/json' -d '{"text": "one two\nthree"}' 'http://127.0.0.1:$port/v1/ops/text.stats?wait=5'
  curl -si -H 'Content-Type: application/json' -d '{"title": "Q3", "sections": 4}' http://127.0.0.1:$port/v1/ops/report.generate
  curl -s "http://127.0.0.1:$port\$LOCATION?wait=30"      # LOCATION from the line above
  curl -sN -H 'Accept: text/event-stream' "http://127.0.0.1:$port\$LOCATION/events"
The browser example (a report's progress, live): open $example_url
The chat (rooms are topics chat.room.<room>; open it in two windows):
  http://127.0.0.1:$port/chat/#lobby
  $chat_bot
  curl -s -H 'Content-Type: application/json' -d '{"from": "curl", "text": "hi"}' http://127.0.0.1:$port/v1/topics/chat.room.lobby
  curl -sN -H 'Accept: text/event-stream' 'http://127.0.0.1:$port/v1/topics/chat.room.lobby/events?after=0'
Press Ctrl-C to stop.
MSG
wait -n "${pids[@]}"
