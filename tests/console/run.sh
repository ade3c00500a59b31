#!/usr/bin/env bash
# The console, end to end: headless Chromium (playwright-core, Debian's chromium) against a real
# tandem on a free loopback port, with a real webhook receiver on loopback started by the test.
#   TANDEM_BIN=path/to/tandem bash tests/console/run.sh
# Screenshots of the main pages are taken on every run (into a temporary directory); to refresh
# the README's: TANDEM_SCREENSHOTS_DIR=docs/screenshots bash tests/console/run.sh (from the root).
set -euo pipefail
CALLER_DIR="$PWD"
cd "$(dirname "$0")"
TANDEM_BIN="${TANDEM_BIN:?set TANDEM_BIN to the tandem binary}"

if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export TANDEM_URL="http://127.0.0.1:$PORT"
export TANDEM_ADMIN_TOKEN="console-admin-token-0123456789"
export WEB_WRITE_KEY="console-web-write-key-0123456789"
export SHOP_WRITE_KEY="console-shop-write-key-0123456789"
cat > "$WORK/tandem.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
data_dir = "$WORK/data"

[organization]
name = "Acme"

[organization.policies.change_approval]
value = { required = true, exempt_roles = ["org_admin", "workspace_admin"] }
overridable = true

[organization.policies.retention_days]
value = 395
overridable = true

[[workspaces]]
id = "emea"
name = "Europe"

[workspaces.policies]
retention_days = 180

[[workspaces.sources]]
id = "web"
name = "Website"
owner = "web-team@acme.test"
purpose = "Analytics and personalization of the shop"
write_key = "$WEB_WRITE_KEY"

[[workspaces.tracking_plans]]
id = "web-orders"
name = "Website orders"
owner = "data-governance@acme.test"
sources = ["web"]
mode = "flag"

[workspaces.tracking_plans.events."Order Completed"]
type = "object"
required = ["order_id", "total"]
properties.order_id.type = "string"
properties.total = { type = "number", minimum = 0 }

[[workspaces]]
id = "apac"
name = "Asia-Pacific"

[[workspaces.sources]]
id = "shop"
name = "Shop app"
owner = "apac-team@acme.test"
write_key = "$SHOP_WRITE_KEY"
TOML

"$TANDEM_BIN" serve --config "$WORK/tandem.toml" > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 150); do
  curl -fs "$TANDEM_URL/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "$TANDEM_URL/readyz" >/dev/null || { cat "$WORK/server.log"; echo "tandem did not start"; exit 1; }

if [ -n "${TANDEM_SCREENSHOTS_DIR:-}" ]; then
  export SCREENSHOT_DIR="$(cd "$CALLER_DIR" && mkdir -p "$TANDEM_SCREENSHOTS_DIR" && cd "$TANDEM_SCREENSHOTS_DIR" && pwd)"
else
  export SCREENSHOT_DIR="$WORK/screenshots"
fi
status=0
node console.mjs || status=$?
if [ "$status" -ne 0 ]; then echo "--- server log"; tail -60 "$WORK/server.log"; fi
exit "$status"
