#!/usr/bin/env bash
# Smoke test of `keyroll controller` on an existing volume (doctor path) with the real OpenClaw
# gateway (no Docker): the state dir is seeded with `openclaw.json = {}` and a legacy plaintext
# auth profile; after bootstrap (migrate → doctor → migrate → harden) the store holds a keyRef and
# the plaintext is gone everywhere, backups included. Self-cleaning; exits non-zero on failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE="$ROOT/node_modules/.bin/node"
[ -x "$NODE" ] || { echo "smoke: $NODE missing; run npm ci" >&2; exit 2; }
READY_TIMEOUT_S="${SMOKE_READY_TIMEOUT_S:-400}"

SANDBOX="$(mktemp -d "${TMPDIR:-/tmp}/keyroll-entry-XXXXXX")"
TOKEN="smoke-token-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
KEY="smoke-key-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
LEGACY="legacy-plaintext-must-be-rewritten-$(od -An -tx1 -N4 /dev/urandom | tr -d ' \n')"
CTL_PID=""
PASS=0
FAIL=0

free_port() { "$NODE" -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

cleanup() {
  local rc=$?
  if [ -n "$CTL_PID" ] && kill -0 "$CTL_PID" 2>/dev/null; then
    kill -TERM "$CTL_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$CTL_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$CTL_PID" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$SANDBOX/controller.log" ]; then
    echo "--- controller log (tail) ---" >&2
    tail -n 40 "$SANDBOX/controller.log" | sed -e "s/$KEY/[KEY]/g" -e "s/$LEGACY/[LEGACY]/g" -e "s/$TOKEN/[TOKEN]/g" >&2
  fi
  rm -rf "$SANDBOX"
  exit "$rc"
}
trap cleanup EXIT INT TERM

check() { if [ "$2" = "$3" ]; then PASS=$((PASS + 1)); echo "PASS $1"; else FAIL=$((FAIL + 1)); echo "FAIL $1: expected '$2', got '$3'"; fi; }
jget() {
  "$NODE" -e 'let v=JSON.parse(process.argv[1]);for(const k of process.argv[2].split(".")){v=v==null?undefined:v[k]}console.log(v===undefined?"":typeof v==="object"?JSON.stringify(v):String(v))' "$1" "$2"
}
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
auth=(-H "Authorization: Bearer $TOKEN")

export HOME="$SANDBOX" OPENCLAW_HOME="$SANDBOX" OPENCLAW_STATE_DIR="$SANDBOX/.openclaw" TMPDIR="$SANDBOX/tmp"
export OPENCLAW_DISABLE_PLUGIN_REGISTRY_MIGRATION=1 OPENCLAW_GATEWAY_TOKEN="$TOKEN" KILOCODE_API_KEY="$KEY"
mkdir -p "$TMPDIR" "$OPENCLAW_STATE_DIR/agents/main/agent"
echo '{}' > "$OPENCLAW_STATE_DIR/openclaw.json" # an existing volume: forces the doctor path
printf '{"version":1,"profiles":{"kilocode:default":{"type":"api_key","provider":"kilocode","key":"%s"}}}' "$LEGACY" \
  > "$OPENCLAW_STATE_DIR/agents/main/agent/auth-profiles.json"

PORT="$(free_port)"
GW_PORT="$(free_port)"
"$NODE" "$ROOT/bin/keyroll.mjs" controller --state-dir "$OPENCLAW_STATE_DIR" --port "$PORT" --bind 127.0.0.1 \
  --gateway-port "$GW_PORT" --ready-timeout "${READY_TIMEOUT_S}s" > "$SANDBOX/controller.log" 2>&1 &
CTL_PID=$!
CTL="http://127.0.0.1:$PORT"

echo "waiting for bootstrap (migrate → doctor → migrate → harden → gateway)…"
deadline=$((SECONDS + READY_TIMEOUT_S))
HEALTH=""
while [ $SECONDS -lt $deadline ]; do
  kill -0 "$CTL_PID" 2>/dev/null || { echo "controller exited" >&2; exit 1; }
  HEALTH="$(curl -s --max-time 5 "$CTL/_kilo/health" || true)"
  case "$HEALTH" in *'"ready"'*|*degraded*) break;; esac
  sleep 1
done
check "controller ready (not degraded)" ready "$(jget "$HEALTH" state)"
check "/health 200" 200 "$(code "$CTL/health")"
check "status without auth 401" 401 "$(code "$CTL/_kilo/gateway/status")"
check "status with auth 200" 200 "$(code "${auth[@]}" "$CTL/_kilo/gateway/status")"

STATE="$(curl -s "${auth[@]}" "$CTL/_kilo/state")"
FORMS="$("$NODE" -e 'console.log([...new Set(JSON.parse(process.argv[1]).profiles.map(p=>p.form))].join(","))' "$STATE")"
check "every kilocode profile is keyRef-env" keyRef-env "$FORMS"
check "legacy plaintext nowhere under the state dir" "" "$(grep -ral -- "$LEGACY" "$OPENCLAW_STATE_DIR" || true)"
check "current key nowhere under the state dir" "" "$(grep -ral -- "$KEY" "$OPENCLAW_STATE_DIR" || true)"
DB="$OPENCLAW_STATE_DIR/agents/main/agent/openclaw-agent.sqlite"
if [ -f "$DB" ]; then
  REF="$("$NODE" -e '
    const { DatabaseSync } = require("node:sqlite");
    const db = new DatabaseSync(process.argv[1], { readOnly: true });
    const row = db.prepare("select store_json from auth_profile_store where store_key=?").get("primary");
    console.log(row ? JSON.parse(row.store_json).profiles["kilocode:default"]?.keyRef?.source ?? "none" : "no-row");' "$DB")"
  check "SQLite store holds an env keyRef" env "$REF"
fi
OPEN_BACKUPS="$(find "$OPENCLAW_STATE_DIR" -name '*.bak' -perm /077 | wc -l | tr -d ' ')"
check "credential backups are 0600" 0 "$OPEN_BACKUPS"

kill -TERM "$CTL_PID"
RC=0; wait "$CTL_PID" || RC=$?
CTL_PID=""
check "controller exit code" 0 "$RC"
# A doctor run after the controller's bootstrap must not bring the plaintext back.
"$NODE" "$ROOT/.cache/openclaw-2026.6.8/node_modules/openclaw/openclaw.mjs" doctor --fix --non-interactive \
  > "$SANDBOX/doctor.log" 2>&1 || true
check "still no plaintext after another doctor" "" "$(grep -ral -- "$LEGACY" "$OPENCLAW_STATE_DIR" || true)"
check "no secret in the controller log" "" "$(grep -l -e "$LEGACY" -e "$KEY" -e "$TOKEN" "$SANDBOX/controller.log" || true)"

echo "controller-entrypoint-smoke-test: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
