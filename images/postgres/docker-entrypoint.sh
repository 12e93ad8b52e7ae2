#!/bin/sh
# Initialise PGDATA on first start (like the official image), then run the server as postgres.
# POSTGRES_INITDB_ARGS adds initdb options, as in the official image (e.g. --no-sync for
# throw-away test servers).
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
if [ "${1:-}" = "postgres" ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        if [ -z "${POSTGRES_PASSWORD:-}" ]; then
            echo "POSTGRES_PASSWORD is not set: set it in the environment of this container" >&2
            exit 1
        fi
        pwfile=$(mktemp)
        printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
        chown postgres "$pwfile"
        setpriv --reuid=postgres --regid=postgres --init-groups \
            initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" \
            --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
            ${POSTGRES_INITDB_ARGS:-} >/dev/null
        rm -f "$pwfile"
        echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
        printf "listen_addresses = '*'\n" >> "$PGDATA/postgresql.auto.conf"
        if [ "$POSTGRES_DB" != "postgres" ]; then
            setpriv --reuid=postgres --regid=postgres --init-groups \
                postgres --single -D "$PGDATA" -j postgres >/dev/null <<SQL
CREATE DATABASE "$POSTGRES_DB" OWNER "$POSTGRES_USER";
SQL
        fi
        echo "PostgreSQL initialised in $PGDATA"
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"
fi
exec "$@"
