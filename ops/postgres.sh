#!/bin/sh
# The PostgreSQL cluster behind `make server DB=postgres`: Debian's PostgreSQL binaries,
# a cluster of the project's own in PGDATA (default .prefect-server/pg), reachable only
# through a unix socket in that folder (no TCP port, so no clash with a system cluster).
#
#   postgres.sh start PGDATA   initdb if needed, start, create the database and pg_trgm
#   postgres.sh url   PGDATA   the connection URL for Prefect
#   postgres.sh stop  PGDATA TIMEOUT
#
# PostgreSQL refuses to run as root: as root the cluster belongs to, and runs as, the
# `postgres` user the Debian package creates; otherwise it runs as the calling user.
# PG_BIN chooses the binaries (default: the newest /usr/lib/postgresql/*/bin).
set -eu

DB_NAME=prefect
DB_USER=prefect

die() {
    echo "postgres: $*" >&2
    exit 1
}

find_bin() {
    if [ -n "${PG_BIN:-}" ]; then
        echo "$PG_BIN"
        return
    fi
    # Debian keeps the server binaries off PATH, one folder per major version
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

BIN=$(find_bin)
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ] || [ ! -x "$BIN/pg_ctl" ]; then
    die "PostgreSQL is not installed (no initdb/pg_ctl in ${BIN:-/usr/lib/postgresql/*/bin}).
Install Debian's server and its extensions (pg_trgm):
    sudo apt-get install postgresql postgresql-contrib
or point PG_BIN at a folder holding initdb, pg_ctl and postgres."
fi

if [ "$(id -u)" = 0 ]; then
    id postgres > /dev/null 2>&1 || die "running as root, and there is no 'postgres' user to run PostgreSQL as (PostgreSQL refuses to run as root); install Debian's postgresql package, which creates it"
    as_pg() { runuser -u postgres -- "$@"; }
    PG_OWNER=postgres
else
    as_pg() { "$@"; }
    PG_OWNER=$(id -un)
fi

cmd_start() {
    pgdata=$1
    case "$pgdata" in /*) ;; *) die "PGDATA must be an absolute path (got $pgdata)" ;; esac
    # The socket is PGDATA/.s.PGSQL.5432; unix socket paths are limited to 107 bytes.
    if [ "${#pgdata}" -gt 90 ]; then
        die "the socket path $pgdata/.s.PGSQL.5432 is too long for a unix socket (107 bytes at most); set PG_DATA to a shorter folder"
    fi
    if [ ! -f "$pgdata/PG_VERSION" ]; then
        mkdir -p "$pgdata"
        [ -z "$(ls -A "$pgdata")" ] || die "$pgdata exists, is not empty, and holds no cluster; move it away"
        chown "$PG_OWNER" "$pgdata"
        chmod 700 "$pgdata"
        if ! as_pg test -w "$pgdata"; then
            die "the '$PG_OWNER' user cannot reach $pgdata: a parent folder is closed to it (e.g. a home folder with mode 700). Open the parents (chmod o+x), or set PG_DATA to a folder it can reach, or run make as a user other than root"
        fi
        echo "postgres: creating a cluster in $pgdata (owner $PG_OWNER)"
        as_pg "$BIN/initdb" -D "$pgdata" -U "$DB_USER" --auth=trust -E UTF8 --locale=C.UTF-8 \
            > "$pgdata.initdb.log" 2>&1 || die "initdb failed; see $pgdata.initdb.log"
        rm -f "$pgdata.initdb.log"
    fi
    if as_pg "$BIN/pg_ctl" -D "$pgdata" status > /dev/null 2>&1; then
        echo "postgres: already running ($pgdata)"
    else
        # No TCP (listen_addresses=''); the socket lives in PGDATA, whose mode 700 keeps
        # everyone but its owner and root out, which is what makes trust auth safe here.
        as_pg "$BIN/pg_ctl" -D "$pgdata" -l "$pgdata/postgres.log" -w -t 60 \
            -o "-c listen_addresses='' -c unix_socket_directories='$pgdata'" start > /dev/null \
            || die "did not start; see $pgdata/postgres.log"
        echo "postgres: started ($pgdata, log: $pgdata/postgres.log)"
    fi
    psql_() { as_pg "$BIN/psql" -X -q -h "$pgdata" -U "$DB_USER" "$@"; }
    if [ -z "$(psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]; then
        psql_ -d postgres -c "CREATE DATABASE $DB_NAME" || die "could not create database $DB_NAME"
    fi
    # Prefect's migrations need pg_trgm (shipped with postgresql-contrib).
    psql_ -d "$DB_NAME" -c "CREATE EXTENSION IF NOT EXISTS pg_trgm" \
        || die "could not create the pg_trgm extension: sudo apt-get install postgresql-contrib"
}

cmd_stop() {
    pgdata=$1 timeout=$2
    if [ ! -f "$pgdata/PG_VERSION" ]; then
        echo "postgres: not running (no cluster in $pgdata)"
        return 0
    fi
    if ! as_pg "$BIN/pg_ctl" -D "$pgdata" status > /dev/null 2>&1; then
        echo "postgres: not running"
        return 0
    fi
    # fast: roll back open transactions, disconnect clients, shut down cleanly
    if as_pg "$BIN/pg_ctl" -D "$pgdata" stop -m fast -w -t "$timeout" > /dev/null 2>&1; then
        echo "postgres: stopped"
        return 0
    fi
    echo "postgres: not stopped within $timeout s (mode fast); stopping in mode immediate"
    if as_pg "$BIN/pg_ctl" -D "$pgdata" stop -m immediate -w -t 10 > /dev/null 2>&1; then
        echo "postgres: stopped (immediate: it recovers from its log at the next start)"
        return 0
    fi
    echo "postgres: FAILED to stop; see $pgdata/postgres.log" >&2
    return 1
}

case "${1:-}" in
start) cmd_start "$2" ;;
url) echo "postgresql+asyncpg://$DB_USER@/$DB_NAME?host=$2" ;;
stop) cmd_stop "$2" "${3:-30}" ;;
*)
    echo "usage: $0 start PGDATA | url PGDATA | stop PGDATA [TIMEOUT]" >&2
    exit 2
    ;;
esac
