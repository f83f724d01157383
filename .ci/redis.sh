# Start a throw-away Redis server on 127.0.0.1 and export MULTIAGENT_TEST_REDIS_URL.
# Sourced by .ci/run; the server is stopped and its directory removed when the shell exits.

start_redis() {
    if ! command -v redis-server >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1; then
            (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) || return 1
        else
            return 1
        fi
    fi
    REDIS_DIR=$(mktemp -d /tmp/multiagent-redis.XXXXXX)
    # a free port unless one is given, so a second server (or a stale one) does not collide
    REDIS_PORT=${REDIS_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
    if ! redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir "$REDIS_DIR" --logfile "$REDIS_DIR/log" --pidfile "$REDIS_DIR/pid" --daemonize yes; then
        rm -rf "$REDIS_DIR"
        return 1
    fi
    local tries=0
    until redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -gt 100 ]; then
            cat "$REDIS_DIR/log" >&2 || true
            stop_redis
            return 1
        fi
        sleep 0.1
    done
    # stopped on any way out: normal exit, Ctrl-C, SIGTERM (e.g. a CI timeout), hang-up
    trap 'stop_redis' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    export MULTIAGENT_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
    echo "ci: Redis running at 127.0.0.1:$REDIS_PORT"
}

stop_redis() {
    [ -n "${REDIS_DIR:-}" ] || return 0
    if [ -f "$REDIS_DIR/pid" ]; then
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 ||
            kill "$(cat "$REDIS_DIR/pid")" 2>/dev/null || true
    fi
    rm -rf "$REDIS_DIR"
    REDIS_DIR=
}
