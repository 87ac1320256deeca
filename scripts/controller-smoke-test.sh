#!/usr/bin/env bash
# Smoke test of `keyroll controller` on a fresh state dir with the real OpenClaw gateway (no Docker):
# onboard in ref mode (no plaintext on disk), wire-contract basics, then a rotation A → B that must
# change the gateway PID and reach the upstream with B. Self-cleaning; exits non-zero on failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE="$ROOT/node_modules/.bin/node"
[ -x "$NODE" ] || { echo "smoke: $NODE missing; run npm ci" >&2; exit 2; }
READY_TIMEOUT_S="${SMOKE_READY_TIMEOUT_S:-400}"

SANDBOX="$(mktemp -d "${TMPDIR:-/tmp}/keyroll-smoke-XXXXXX")"
TOKEN="smoke-token-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
KEY_A="smoke-key-A-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
KEY_B="rotated-smoke-key-B-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
CTL_PID=""
UP_PID=""
PASS=0
FAIL=0

free_port() { "$NODE" -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

cleanup() {
  local rc=$?
  for pid in $CTL_PID $UP_PID; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  if [ "$rc" -ne 0 ] && [ -f "$SANDBOX/controller.log" ]; then
    echo "--- controller log (tail) ---" >&2
    tail -n 40 "$SANDBOX/controller.log" | sed -e "s/$KEY_A/[KEY_A]/g" -e "s/$KEY_B/[KEY_B]/g" -e "s/$TOKEN/[TOKEN]/g" >&2
  fi
  rm -rf "$SANDBOX"
  exit "$rc"
}
trap cleanup EXIT INT TERM

check() { # label expected actual
  if [ "$2" = "$3" ]; then PASS=$((PASS + 1)); echo "PASS $1"; else FAIL=$((FAIL + 1)); echo "FAIL $1: expected '$2', got '$3'"; fi
}
jget() { # json path(dot-separated)
  "$NODE" -e 'let v=JSON.parse(process.argv[1]);for(const k of process.argv[2].split(".")){v=v==null?undefined:v[k]}console.log(v===undefined?"":typeof v==="object"?JSON.stringify(v):String(v))' "$1" "$2"
}
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
auth=(-H "Authorization: Bearer $TOKEN")

export HOME="$SANDBOX" OPENCLAW_HOME="$SANDBOX" OPENCLAW_STATE_DIR="$SANDBOX/.openclaw" TMPDIR="$SANDBOX/tmp"
export OPENCLAW_DISABLE_PLUGIN_REGISTRY_MIGRATION=1 OPENCLAW_GATEWAY_TOKEN="$TOKEN" KILOCODE_API_KEY="$KEY_A"
mkdir -p "$TMPDIR"

# Fake upstream: accepts the keys listed in a file re-read per request; records key hashes only.
printf '%s\n' "$KEY_A" > "$SANDBOX/keys.txt"
"$NODE" "$ROOT/test/support/fake-upstream.ts" --keys-file "$SANDBOX/keys.txt" --record "$SANDBOX/upstream.jsonl" \
  > "$SANDBOX/upstream.out" 2>&1 &
UP_PID=$!
for _ in $(seq 1 100); do [ -s "$SANDBOX/upstream.out" ] && break; sleep 0.1; done
BASE_URL="$(jget "$(head -n1 "$SANDBOX/upstream.out")" baseUrl)"

PORT="$(free_port)"
GW_PORT="$(free_port)"
"$NODE" "$ROOT/bin/keyroll.mjs" controller --state-dir "$OPENCLAW_STATE_DIR" --port "$PORT" --bind 127.0.0.1 \
  --gateway-port "$GW_PORT" --provider-base-url "$BASE_URL" --enable-chat-completions \
  --ready-timeout "${READY_TIMEOUT_S}s" > "$SANDBOX/controller.log" 2>&1 &
CTL_PID=$!
CTL="http://127.0.0.1:$PORT"

wait_state() { # predicate-js timeout-s → prints the state JSON once the predicate holds
  local deadline=$((SECONDS + $2)) s
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "$CTL_PID" 2>/dev/null || { echo "controller exited" >&2; return 1; }
    s="$(curl -s --max-time 5 "${auth[@]}" "$CTL/_kilo/state" || true)"
    if [ -n "$s" ] && "$NODE" -e "const s=JSON.parse(process.argv[1]); process.exit(($1)?0:1)" "$s" 2>/dev/null; then
      echo "$s"; return 0
    fi
    h="$(curl -s --max-time 5 "$CTL/_kilo/health" || true)"
    case "$h" in *degraded*) echo "controller degraded: $h" >&2; return 1;; esac
    sleep 1
  done
  echo "timed out waiting for: $1" >&2; return 1
}

echo "waiting for the controller and the gateway (onboard + cold start)…"
STATE="$(wait_state 's.gateway.state==="running" && s.gateway.ready' "$READY_TIMEOUT_S")"

check "/health 200" 200 "$(code "$CTL/health")"
check "/_kilo/health 200" 200 "$(code "$CTL/_kilo/health")"
check "/_kilo/health state" ready "$(jget "$(curl -s "$CTL/_kilo/health")" state)"
check "status without auth 401" 401 "$(code "$CTL/_kilo/gateway/status")"
check "status with auth 200" 200 "$(code "${auth[@]}" "$CTL/_kilo/gateway/status")"
check "patch without auth 401" 401 "$(code -X POST -d "{\"KILOCODE_API_KEY\":\"$KEY_B\"}" "$CTL/_kilo/env/patch")"
check "patch PATH 400" 400 "$(code "${auth[@]}" -X POST -d '{"PATH":"/tmp"}' "$CTL/_kilo/env/patch")"
check "patch {} 400" 400 "$(code "${auth[@]}" -X POST -d '{}' "$CTL/_kilo/env/patch")"
check "unknown route code" controller_route_unavailable "$(jget "$(curl -s "${auth[@]}" "$CTL/_kilo/nope")" code)"

# SecretRef mode: the profile holds a keyRef, and the key is nowhere on disk.
check "profile form" '["keyRef-env"]' "$("$NODE" -e 'console.log(JSON.stringify(JSON.parse(process.argv[1]).profiles.map(p=>p.form)))' "$STATE")"
DB="$OPENCLAW_STATE_DIR/agents/main/agent/openclaw-agent.sqlite"
PROFILE="$("$NODE" -e '
  const { DatabaseSync } = require("node:sqlite");
  const db = new DatabaseSync(process.argv[1], { readOnly: true });
  const row = db.prepare("select store_json from auth_profile_store where store_key=?").get("primary");
  const p = JSON.parse(row.store_json).profiles["kilocode:default"];
  console.log(JSON.stringify({ keyRef: p.keyRef?.source ?? null, key: "key" in p }));' "$DB")"
check "profile keyRef, no key" '{"keyRef":"env","key":false}' "$PROFILE"
check "key A nowhere under the state dir" "" "$(grep -ral -- "$KEY_A" "$OPENCLAW_STATE_DIR" || true)"

# Rotation: upstream accepts only B; the patch must restart the gateway with B.
PID_BEFORE="$(jget "$STATE" gateway.pid)"
printf '%s\n' "$KEY_B" > "$SANDBOX/keys.txt"
PATCH="$(curl -s "${auth[@]}" -X POST -H 'X-Keyroll-Key-Version: smoke-2' -d "{\"KILOCODE_API_KEY\":\"$KEY_B\"}" "$CTL/_kilo/env/patch")"
check "patch ok" true "$(jget "$PATCH" ok)"
check "patch signaled" true "$(jget "$PATCH" signaled)"
STATE2="$(wait_state "s.gateway.state===\"running\" && s.gateway.ready && s.gateway.pid!==$PID_BEFORE" "$READY_TIMEOUT_S")"
PID_AFTER="$(jget "$STATE2" gateway.pid)"
[ -n "$PID_AFTER" ] && [ "$PID_AFTER" != "$PID_BEFORE" ] && check "gateway PID changed" yes yes || check "gateway PID changed" yes no
kill -0 "$PID_BEFORE" 2>/dev/null && check "old gateway gone" yes no || check "old gateway gone" yes yes
check "key version label" smoke-2 "$(jget "$STATE2" key.version)"

CHAT="$(code --max-time 120 -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d '{"model":"openclaw","messages":[{"role":"user","content":"hi"}]}' "http://127.0.0.1:$GW_PORT/v1/chat/completions")"
check "request through the gateway 200" 200 "$CHAT"
HASH_B="$(printf '%s' "$KEY_B" | sha256sum | cut -c1-16)"
LAST="$(grep chat/completions "$SANDBOX/upstream.jsonl" | tail -n1)"
check "upstream saw key B" "$HASH_B" "$(jget "$LAST" keyHash)"

# Graceful stop: exit 0 and no gateway left behind.
kill -TERM "$CTL_PID"
RC=0; wait "$CTL_PID" || RC=$?
check "controller exit code" 0 "$RC"
kill -0 "$PID_AFTER" 2>/dev/null && check "no gateway after shutdown" yes no || check "no gateway after shutdown" yes yes
CTL_PID=""
check "no secret in the controller log" "" "$(grep -l -e "$KEY_A" -e "$KEY_B" -e "$TOKEN" "$SANDBOX/controller.log" || true)"

echo "controller-smoke-test: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
