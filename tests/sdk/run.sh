#!/usr/bin/env bash
# SDK compatibility: real Segment SDKs pointed at a real tandem.
#   TANDEM_BIN=path/to/tandem bash tests/sdk/run.sh
# Installs its npm packages (package-lock.json) and a Python venv with the PyPI SDK when missing,
# starts tandem on a free loopback port, runs each SDK, and checks `tandem log export` for what it sent.
set -euo pipefail
cd "$(dirname "$0")"
TANDEM_BIN="${TANDEM_BIN:?set TANDEM_BIN to the tandem binary}"
VENV="${TANDEM_SDK_VENV:-$HOME/.cache/tandem-sdk-venv}"

if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import segment.analytics" 2>/dev/null || "$VENV/bin/pip" install -q -r requirements.txt

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

npx --no-install esbuild browser/entry.js --bundle --format=iife --log-level=warning --outfile="$WORK/bundle.js"

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export WRITE_KEY="sdk-test-write-key-0123456789"
export TANDEM_URL="http://127.0.0.1:$PORT"
cat > "$WORK/tandem.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
data_dir = "$WORK/data"

[[workspaces]]
id = "sdk"
name = "SDK tests"

[[workspaces.sources]]
id = "sdk"
name = "SDK test source"
owner = "qa@example.test"
write_key = "$WRITE_KEY"
TOML
TANDEM_ADMIN_TOKEN="sdk-admin-token-0123456789" "$TANDEM_BIN" serve --config "$WORK/tandem.toml" > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
  curl -fs "$TANDEM_URL/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "$TANDEM_URL/readyz" >/dev/null || { cat "$WORK/server.log"; echo "tandem did not start"; exit 1; }

passed=0; failed=0
check() {
  local name="$1"; shift
  echo "--- $name"
  if "$@" && "$TANDEM_BIN" log export --data "$WORK/data" 2>/dev/null | python3 check_export.py "$name"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); echo "FAILED: $name"
  fi
}
check python "$VENV/bin/python" python_sdk.py
check node node node_sdk.mjs
check browser node browser.mjs "$WORK/bundle.js"

if [ "$failed" -gt 0 ]; then echo "--- server log"; tail -50 "$WORK/server.log"; fi
echo "sdk compatibility: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
