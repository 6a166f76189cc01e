#!/usr/bin/env bash
# A private NetBox (the real server, `pip install netbox`) on loopback for weft's NetBox IPAM
# tests and benchmark. Idempotent: `up` installs what is missing (PostgreSQL 15 and Redis from
# Debian, a Python 3.12 venv), reuses the venv and the migrated database dump kept in the state
# directory across runs on a machine (the 337 migrations take ~8 min once; a restore ~5 s),
# starts PostgreSQL, Redis and gunicorn on loopback ports of their own, and writes
# $STATE/env (NETBOX_URL, NETBOX_AUTHORITY, NETBOX_TOKEN_FILE, NETBOX_PID). `down` stops it.
#
#   scripts/netbox.sh up | down | status
#
# WEFT_NETBOX_STATE (default /var/tmp/weft-netbox) holds everything; nothing else is touched.
set -euo pipefail
NB_VERSION=4.7.3
STATE=${WEFT_NETBOX_STATE:-/var/tmp/weft-netbox}
PG_PORT=${WEFT_NETBOX_PG_PORT:-55433}
REDIS_PORT=${WEFT_NETBOX_REDIS_PORT:-56380}
HTTP_PORT=${WEFT_NETBOX_PORT:-58080}
PG_BIN=/usr/lib/postgresql/15/bin
RUN=$STATE/run
DUMP=$STATE/migrated-$NB_VERSION-pg15.dump
log() { echo "netbox.sh: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

python312() {
  # pyenv's shim answers to python3.12 even when the selected version is another: try each.
  for p in "${WEFT_PYTHON312:-}" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12.*/bin/python3.12 \
    /usr/bin/python3.12 "$(command -v python3.12 || true)"; do
    [[ -n "$p" && -x "$p" ]] && "$p" -c 'import venv' >/dev/null 2>&1 && { echo "$p"; return; }
  done
  return 1
}

install_packages() {
  local missing=()
  [[ -x $PG_BIN/postgres ]] || missing+=(postgresql-15)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  dpkg -s libpq-dev >/dev/null 2>&1 || missing+=(libpq-dev)
  command -v gcc >/dev/null 2>&1 || missing+=(gcc)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

venv() {
  if [[ -x $STATE/venv/bin/netbox ]] && [[ $("$STATE/venv/bin/pip" show netbox 2>/dev/null | sed -n 's/^Version: //p') == "$NB_VERSION" ]]; then
    return
  fi
  local py
  py=$(python312) || { log "NetBox $NB_VERSION needs Python 3.12 (set WEFT_PYTHON312 to its path)"; exit 1; }
  log "venv with netbox==$NB_VERSION (~2 min once)"
  rm -rf "$STATE/venv"
  "$py" -m venv "$STATE/venv"
  "$STATE/venv/bin/pip" install -q --disable-pip-version-check "netbox==$NB_VERSION"
}

pg() { runuser -u postgres -- "$@"; }
psql_nb() { pg "$PG_BIN/psql" -h "$RUN" -p "$PG_PORT" -v ON_ERROR_STOP=1 -q "$@"; }

pg_up() {
  if [[ ! -f $STATE/pgdata/PG_VERSION ]]; then
    rm -rf "$STATE/pgdata"
    install -d -o postgres -g postgres -m 700 "$STATE/pgdata"
    pg "$PG_BIN/initdb" -D "$STATE/pgdata" -U postgres -A peer --auth-host=scram-sha-256 -E UTF8 >/dev/null
  fi
  if ! pg "$PG_BIN/pg_ctl" -D "$STATE/pgdata" status >/dev/null 2>&1; then
    port_open "$PG_PORT" && { log "port $PG_PORT is taken (set WEFT_NETBOX_PG_PORT)"; exit 1; }
    pg "$PG_BIN/pg_ctl" -D "$STATE/pgdata" -l "$RUN/pg.log" -w start \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $RUN -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null
  fi
}

redis_up() {
  if [[ -f $RUN/redis.pid ]] && kill -0 "$(cat "$RUN/redis.pid")" 2>/dev/null; then return; fi
  port_open "$REDIS_PORT" && { log "port $REDIS_PORT is taken (set WEFT_NETBOX_REDIS_PORT)"; exit 1; }
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --pidfile "$RUN/redis.pid" \
    --save '' --appendonly no --logfile "$RUN/redis.log" --dir "$RUN"
  for _ in $(seq 50); do [[ -s $RUN/redis.pid ]] && return; sleep 0.1; done
  log "redis did not start: $RUN/redis.log"; exit 1
}

configure() {
  mkdir -p "$STATE/root"
  [[ -f $STATE/secret ]] || "$STATE/venv/bin/netbox" secret-key >"$STATE/secret" 2>/dev/null \
    || "$STATE/venv/bin/python" -c 'import secrets,string; a=string.ascii_letters+string.digits+"!@#$%^&*(-_=+)"; print("".join(secrets.choice(a) for _ in range(60)))' >"$STATE/secret"
  [[ -f $STATE/dbpass ]] || "$STATE/venv/bin/python" -c 'import secrets; print(secrets.token_hex(16))' >"$STATE/dbpass"
  [[ -f $STATE/adminpass ]] || "$STATE/venv/bin/python" -c 'import secrets; print(secrets.token_hex(16))' >"$STATE/adminpass"
  chmod 600 "$STATE/secret" "$STATE/dbpass" "$STATE/adminpass"
  mkdir -p "$STATE/root/conf" "$STATE/root/media" "$STATE/root/reports" "$STATE/root/scripts" "$STATE/root/static"
  cat >"$STATE/root/conf/configuration.py" <<EOF
# Written by weft's scripts/netbox.sh: a loopback-only NetBox for tests.
ALLOWED_HOSTS = ['127.0.0.1', 'localhost']
DATABASES = {'default': {'ENGINE': 'django.db.backends.postgresql', 'NAME': 'netbox', 'USER': 'netbox',
    'PASSWORD': '$(cat "$STATE/dbpass")', 'HOST': '127.0.0.1', 'PORT': '$PG_PORT', 'CONN_MAX_AGE': 300}}
REDIS = {'tasks': {'HOST': '127.0.0.1', 'PORT': $REDIS_PORT, 'DATABASE': 0, 'PASSWORD': '', 'SSL': False},
         'caching': {'HOST': '127.0.0.1', 'PORT': $REDIS_PORT, 'DATABASE': 1, 'PASSWORD': '', 'SSL': False}}
SECRET_KEY = '''$(cat "$STATE/secret")'''
API_TOKEN_PEPPERS = {1: '''$(cat "$STATE/secret")'''}
CENSUS_REPORTING_ENABLED = False
ISOLATED_DEPLOYMENT = True
EOF
}

database() {
  local exists
  exists=$(psql_nb -tA -c "SELECT 1 FROM pg_database WHERE datname='netbox'")
  [[ $exists == 1 ]] && return
  psql_nb -c "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='netbox') THEN CREATE USER netbox; END IF; END\$\$" \
    -c "ALTER USER netbox WITH PASSWORD '$(cat "$STATE/dbpass")'" -c "CREATE DATABASE netbox OWNER netbox"
  if [[ -s $DUMP ]]; then
    log "restoring the migrated database ($DUMP)"
    PGPASSWORD=$(cat "$STATE/dbpass") "$PG_BIN/pg_restore" -h 127.0.0.1 -p "$PG_PORT" -U netbox -d netbox --no-owner "$DUMP"
  else
    log "running NetBox's migrations (~8 min, once per machine)"
    (cd "$STATE" && NETBOX_ROOT=$STATE/root "$STATE/venv/bin/netbox" migrate --no-input >"$RUN/migrate.log" 2>&1) \
      || { log "migrations failed: $RUN/migrate.log"; tail -20 "$RUN/migrate.log" >&2; exit 1; }
    PGPASSWORD=$(cat "$STATE/dbpass") "$PG_BIN/pg_dump" -h 127.0.0.1 -p "$PG_PORT" -U netbox -Fc netbox >"$DUMP.tmp"
    mv "$DUMP.tmp" "$DUMP"
  fi
  log "creating the admin user"
  (cd "$STATE" && NETBOX_ROOT=$STATE/root DJANGO_SUPERUSER_PASSWORD=$(cat "$STATE/adminpass") \
    "$STATE/venv/bin/netbox" createsuperuser --no-input --username admin --email admin@example.invalid >"$RUN/admin.log" 2>&1) \
    || { log "createsuperuser failed: $RUN/admin.log"; exit 1; }
  rm -f "$STATE/token"
}

# gunicorn is known by its command line (setsid may fork, so $! is not always its pid).
gunicorn_pids() { pgrep -f "$STATE/venv/bin/gunicorn --bind 127.0.0.1:$HTTP_PORT " || true; }

gunicorn_up() {
  if [[ -n $(gunicorn_pids) ]]; then return; fi
  port_open "$HTTP_PORT" && { log "port $HTTP_PORT is taken (set WEFT_NETBOX_PORT)"; exit 1; }
  log "starting NetBox on 127.0.0.1:$HTTP_PORT"
  # The whole background subshell's output goes to the log: a caller reading this script's
  # output (a test's Command::output) must see it end when the script does.
  (cd "$STATE" && NETBOX_ROOT=$STATE/root exec setsid "$STATE/venv/bin/gunicorn" --bind "127.0.0.1:$HTTP_PORT" \
    --workers "${WEFT_NETBOX_WORKERS:-3}" --threads 4 --preload --no-control-socket --timeout 120 \
    netbox.wsgi) >"$RUN/gunicorn.log" 2>&1 </dev/null &
  for _ in $(seq 600); do
    # Up when it answers (403 without a token: the workers are serving).
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/api/status/" 2>/dev/null) || true
    if [[ $code == 403 || $code == 200 ]]; then return; fi
    [[ -n $(gunicorn_pids) ]] || { log "gunicorn exited: $RUN/gunicorn.log"; tail -20 "$RUN/gunicorn.log" >&2; exit 1; }
    sleep 0.2
  done
  log "NetBox did not answer in 120 s: $RUN/gunicorn.log"; exit 1
}

token() {
  if [[ -s $STATE/token ]]; then
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$STATE/token")" \
      "http://127.0.0.1:$HTTP_PORT/api/ipam/prefixes/?limit=1")
    [[ $code == 200 ]] && return
  fi
  local body
  body=$(curl -sf -X POST -H 'Content-Type: application/json' -H 'Accept: application/json' \
    "http://127.0.0.1:$HTTP_PORT/api/users/tokens/provision/" \
    --data "{\"username\":\"admin\",\"password\":\"$(cat "$STATE/adminpass")\"}") \
    || { log "token provisioning failed"; exit 1; }
  (umask 077; "$STATE/venv/bin/python" -c 'import json,sys; d=json.load(sys.stdin); print("nbt_%s.%s" % (d["key"], d["token"]) if d.get("version")==2 else d["key"], end="")' <<<"$body" >"$STATE/token")
}

up() {
  [[ $(id -u) == 0 ]] || { log "run as root"; exit 1; }
  mkdir -p "$STATE" "$RUN"
  chmod 755 "$STATE"
  chown postgres "$RUN" 2>/dev/null || true
  install_packages
  chown postgres "$RUN"
  venv
  pg_up
  redis_up
  configure
  database
  gunicorn_up
  token
  cat >"$STATE/env" <<EOF
NETBOX_URL=http://127.0.0.1:$HTTP_PORT
NETBOX_AUTHORITY=127.0.0.1:$HTTP_PORT
NETBOX_TOKEN_FILE=$STATE/token
NETBOX_PID=$(gunicorn_pids | head -1)
NETBOX_PG="$PG_BIN/psql -h $RUN -p $PG_PORT"
EOF
  log "up: http://127.0.0.1:$HTTP_PORT (token in $STATE/token)"
}

down() {
  pkill -f "$STATE/venv/bin/gunicorn --bind 127.0.0.1:$HTTP_PORT " 2>/dev/null || true
  for _ in $(seq 100); do [[ -n $(gunicorn_pids) ]] || break; sleep 0.1; done
  [[ -f $RUN/redis.pid ]] && { kill "$(cat "$RUN/redis.pid")" 2>/dev/null || true; rm -f "$RUN/redis.pid"; }
  [[ -f $STATE/pgdata/PG_VERSION ]] && pg "$PG_BIN/pg_ctl" -D "$STATE/pgdata" -m fast stop >/dev/null 2>&1 || true
  rm -f "$STATE/env"
}

case ${1:-up} in
  up) up ;;
  down) down ;;
  status)
    [[ -f $STATE/env && -s $STATE/token && -n $(gunicorn_pids) ]] || exit 1
    for _ in 1 2 3 4 5; do
      code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$STATE/token")" \
        "http://127.0.0.1:$HTTP_PORT/api/status/") || true
      [[ $code == 200 ]] && { cat "$STATE/env"; exit 0; }
      sleep 1
    done
    exit 1
    ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
