#!/usr/bin/env bash
# Schemathesis against a live `refact serve`: the demo model, SQLite in a temp dir,
# authentication ON (the code default) with an admin token, loopback only.
#
#   scripts/schemathesis.sh            # what .ci/run does after the cargo tests
#
# Knobs (environment): SCHEMATHESIS_MAX_EXAMPLES (default 30 per operation and phase),
# SCHEMATHESIS_SEED (default fixed, so that CI runs are reproducible; set `random` for a
# new one), SCHEMATHESIS_REPORT_DIR (JUnit report; default under the temp dir),
# REFACT_BIN (an already built `refact`; default: cargo build the debug one).
#
# SSE: `GET /edits/{id}/events` is left out. With the worker off an edit stays queued,
# so its stream never ends (keep-alives every 15 s defeat any read timeout) and
# Schemathesis would wait forever on the ids it learns from `POST /edits`; the stream's
# document (one event = `event` + JSON `data`) is checked by the cargo tests instead.
#
# Renders are kept cheap: images at most 64x64 and 2 steps (the server answers 422 beyond
# that, which the document allows). The edit worker is off, so edits stay queued and no
# ReFACT optimisation runs; edits end to end are the cargo tests' business.
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-30}
seed=${SCHEMATHESIS_SEED:-20261130}

if ! command -v schemathesis >/dev/null 2>&1; then
  echo "schemathesis: installing it with pip"
  python3 -m pip install --quiet 'schemathesis>=4.32,<5'
fi
if ! command -v openapi-spec-validator >/dev/null 2>&1; then
  python3 -m pip install --quiet 'openapi-spec-validator>=0.7'
fi
schemathesis --version

if [[ -n "${REFACT_BIN:-}" ]]; then
  refact=$REFACT_BIN   # an already built `refact`
else
  cargo build --locked -p refact-server --bin refact
  target_dir=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  refact="$target_dir/debug/refact"
fi

work=$(mktemp -d -t refact-schemathesis.XXXXXX)
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
db="sqlite://$work/refact.db"

# Run from the temp dir so that config/default.toml (auth off) is not read: the code
# defaults apply, as in production, and the variables below override them.
export REFACT_BIND="127.0.0.1:$port"
export REFACT_DATABASE_URL="$db"
export REFACT_MODEL=demo
export REFACT_DATA_DIR="$work/data"
export REFACT_DEVICE=cpu
export REFACT_AUTH__ENABLED=true
export REFACT_WORKER__ENABLED=false
export REFACT_LIMITS__MAX_WIDTH=64
export REFACT_LIMITS__MAX_HEIGHT=64
export REFACT_LIMITS__MAX_STEPS=2
export REFACT_LIMITS__REQUEST_TIMEOUT_SECS=60
unset REFACT_CONFIG

token=$(cd "$work" && "$refact" token create --database-url "$db" --name schemathesis --scope admin 2>/dev/null)

(cd "$work" && exec "$refact" serve >"$work/server.log" 2>&1) &
server_pid=$!

ready=""
for _ in $(seq 240); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    break
  fi
  if curl -fsS "$base/readyz" >/dev/null 2>&1; then
    ready=yes
    break
  fi
  sleep 0.5
done
if [[ -z "$ready" ]]; then
  echo "schemathesis: the server did not become ready; its log:" >&2
  cat "$work/server.log" >&2
  exit 1
fi

# The served document must be valid OpenAPI 3.1 first.
curl -fsS "$base/openapi.json" -o "$work/openapi.json"
openapi-spec-validator "$work/openapi.json"

seed_flag=(--seed "$seed")
[[ "$seed" == random ]] && seed_flag=()
report_dir=${SCHEMATHESIS_REPORT_DIR:-$work/report}

started=$(date +%s)
status=0
# From the temp dir: Schemathesis keeps a cache (.schemathesis/) in its working directory.
cd "$work"
schemathesis run "$base/openapi.json" \
  --url "$base" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance,response_headers_conformance,ignored_auth \
  --exclude-operation-id streamEditEvents \
  --max-examples "$max_examples" \
  "${seed_flag[@]}" \
  --workers 1 \
  --request-timeout 60 \
  --report junit --report-dir "$report_dir" \
  --generation-database none \
  --no-color || status=$?
echo "schemathesis: finished in $(( $(date +%s) - started )) s with status $status"

if grep -q "panicked" "$work/server.log"; then
  echo "schemathesis: the server panicked; its log:" >&2
  grep -B2 -A10 "panicked" "$work/server.log" >&2
  status=1
fi
if [[ $status -ne 0 ]]; then
  echo "schemathesis: last lines of the server log:" >&2
  tail -n 40 "$work/server.log" >&2
fi
exit "$status"
