#!/usr/bin/env bash
# API fuzzing with schemathesis against the real smithers-host binary, driven
# by the server's own OpenAPI document (GET /openapi.json).
#
#   reliability/schemathesis.sh [MAX_EXAMPLES_PER_OPERATION] [extra schemathesis args...]
#
# Installs schemathesis (pinned) into reliability/.venv (git-ignored) on first
# use, builds the debug binary into the shared target dir, starts it on
# 127.0.0.1 with a token on temporary root and state dirs (the scripted test
# fixture installed, plus a run parked on an approval so run-scoped routes
# have something to act on), runs every check but `unsupported_method`
# (Smithers answers a wrong method with 404 NOT_FOUND "Route not found", not
# 405; host/tests/http_api.rs pins that), then fails if the server log holds a
# panic or the server died. Reports land in reliability/out/.
# The event stream (streamEvents) is left out: the stream of a run that is not
# over never ends by design, and its keep-alive every 10 s defeats
# schemathesis' read timeout, so one parked run hangs the campaign. The route
# is fuzzed by host/tests/reliability_fuzz.rs and pinned by http_sse.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
MAX_EXAMPLES=${1:-100}
shift || true
SCHEMATHESIS_VERSION=4.32.5
VENV=$REPO/reliability/.venv
OUT=$REPO/reliability/out
mkdir -p "$OUT"

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build -q -p smithers-host
BIN=$REPO/target/debug/smithers-host
# The scripted fixture guest (built by the test suite's guest build).
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
GUEST_DIR=$REPO/target/guests
cargo build -q --release --target wasm32-wasip2 --target-dir "$GUEST_DIR" -p fixture-scripted
GUEST=$GUEST_DIR/wasm32-wasip2/release/fixture_scripted.wasm

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/root" "$WORK/state"
cp "$GUEST" "$WORK/root/scripted.wasm"
TOKEN=fuzz-token
LOG=$OUT/schemathesis-server.log
: > "$LOG"
SMITHERS_LOG=warn,smithers_host=info "$BIN" --port 0 --root-dir "$WORK/root" \
  --state-dir "$WORK/state" --auth-token "$TOKEN" > "$WORK/stdout" 2>> "$LOG" &
SERVER_PID=$!
for _ in $(seq 1 300); do
  ADDR=$(sed -n 's#^smithers-host listening on http://##p' "$WORK/stdout")
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "${ADDR:-}" ] || { echo "server did not start"; cat "$LOG"; exit 1; }
AUTH="Authorization: Bearer $TOKEN"
curl -sf -H "$AUTH" "http://$ADDR/v1/runs" -d \
  '{"workflowPath":"scripted.wasm","runId":"fuzz-approval","input":{"root":{"approval":{"id":"gate"}}}}' >/dev/null

set +e
STARTED=$(date +%s)
# Run from $OUT: schemathesis keeps its example database in the working dir.
(cd "$OUT" && "$VENV/bin/schemathesis" run "http://$ADDR/openapi.json" \
  -H "$AUTH" \
  --checks all --exclude-checks unsupported_method,positive_data_acceptance \
  --exclude-operation-id streamEvents \
  --max-examples "$MAX_EXAMPLES" \
  --request-timeout 30 \
  --report junit,ndjson --report-dir "$OUT" --report-junit-path "$OUT/schemathesis-junit.xml" \
  --report-ndjson-path "$OUT/schemathesis.ndjson" \
  --suppress-health-check too_slow,filter_too_much \
  "$@")
STATUS=$?
set -e

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "FAIL: the server died during the run"; STATUS=1
fi
if grep -qiE "panicked|SERVER_ERROR|internal error" "$LOG"; then
  echo "FAIL: the server log shows a panic or an internal error:"; grep -iE "panicked|internal error" "$LOG" | head -20
  STATUS=1
fi
"$VENV/bin/python" - "$OUT/schemathesis.ndjson" "$(( $(date +%s) - STARTED ))" <<'PY'
import json, sys
statuses = {}
for line in open(sys.argv[1]):
    event = json.loads(line)
    for interaction in event.get("ScenarioFinished", {}).get("recorder", {}).get("interactions", {}).values():
        status = (interaction.get("response") or {}).get("status_code", "no answer")
        statuses[status] = statuses.get(status, 0) + 1
total = sum(statuses.values())
errors = sum(n for s, n in statuses.items() if isinstance(s, int) and s >= 500)
shown = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items(), key=lambda kv: str(kv[0])))
print(f"schemathesis: {total} requests in {sys.argv[2]} s ({shown}); 5xx: {errors}")
PY
echo "schemathesis: exit $STATUS; server log: $LOG"
exit $STATUS
