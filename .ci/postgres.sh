# Start a throw-away PostgreSQL cluster on 127.0.0.1 and export MULTIAGENT_TEST_POSTGRES_URL.
# Sourced by .ci/run; the cluster is stopped and removed when the shell exits.

start_postgres() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$bin" ]; then
        if command -v apt-get >/dev/null 2>&1; then
            (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || return 1
        else
            return 1
        fi
        bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
        [ -n "$bin" ] || return 1
    fi
    PG_DIR=$(mktemp -d /tmp/multiagent-pg.XXXXXX)
    chown postgres "$PG_DIR" 2>/dev/null || true
    local as=()
    if [ "$(id -u)" = "0" ]; then as=(runuser -u postgres --); fi
    "${as[@]}" "$bin/initdb" -D "$PG_DIR/data" -U postgres -A trust >/dev/null || { rm -rf "$PG_DIR"; return 1; }
    # a free port unless one is given, so a second cluster (or a stale one) does not collide
    PG_PORT=${PG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
    if ! "${as[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
        -o "-h 127.0.0.1 -p $PG_PORT -k $PG_DIR" start >/dev/null; then
        cat "$PG_DIR/log" >&2 || true
        rm -rf "$PG_DIR"
        return 1
    fi
    # stopped on any way out: normal exit, Ctrl-C, SIGTERM (e.g. a CI timeout), hang-up
    trap 'stop_postgres' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    export PG_BIN="$bin" PG_AS="${as[*]}"
    export MULTIAGENT_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
    echo "ci: PostgreSQL running at 127.0.0.1:$PG_PORT"
}

stop_postgres() {
    [ -n "${PG_DIR:-}" ] || return 0
    if [ -d "$PG_DIR/data" ]; then
        ${PG_AS:-} "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -t 30 stop >/dev/null 2>&1 ||
            ${PG_AS:-} "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 ||
            true
    fi
    rm -rf "$PG_DIR"
    PG_DIR=
}
