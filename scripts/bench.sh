#!/usr/bin/env bash
# The benchmark, in one go on this machine (load generator on the same cores). Sections:
#   collect:
#   1. tandem durable ingest at full speed, then at 50 % of it (latency at half load)
#   2. the same request path without persistence (`serve --discard`): the ceiling
#   3. the disk's fdatasync'd sequential write bandwidth for the same record sizes
#   4. cold start, and recovery time of a large log (default 10 GB; BENCH_RECOVERY_GB to change)
#   unify:
#   5. identity + profile + computed-trait updates on a store of 10K profiles, then of 10M
#      (`tandem bench unify`; reference: the same store operations alone). The 10M store takes a
#      long while to populate, so it is kept in BENCH_UNIFY_BIG_DIR and reused by later runs.
#   6. Profile API trait lookups at 5,000 requests/s over HTTP against a server holding ~100K
#      profiles (`tandem bench profile-api`; reference: the same loop on /healthz)
#   deliver:
#   7. batched webhook delivery of a log backlog to a local receiver (`tandem bench deliver`;
#      reference: the same request bodies POSTed directly), then a 5-minute receiver outage under
#      steady input (BENCH_DELIVER_OUTAGE seconds) and the rate the backlog drains at
#   audiences:
#   8. ingest acknowledgement → `Audience Entered` in the log at 10,000 and 2,000 events/s, and a
#      five-condition audience counted over many profiles (`tandem bench audiences`; references:
#      the ack latency of the same load, one pass decoding every profile)
#   9. the personalization API at 5,000 requests/s over HTTP against a server holding ~100K
#      profiles (`tandem bench personalize`; reference: the same loop on /healthz)
#   privacy:
#  10. erasure of one person from a server holding BENCH_PRIVACY_USERS profiles and their
#      events (imported customers plus `tandem load` traffic): time to complete, and the ack
#      latency of steady ingest while it runs (reference: the same ingest without an erasure);
#      then access requests (export) for random people: p50/p99 (reference: the 360° profile
#      view of the same people, GET /api/v1/workspaces/bench/profiles/{id})
# and prints the figures side by side with ratios. Not a test: it asserts nothing.
# Usage: bash scripts/bench.sh [all|collect|unify|deliver|audiences|privacy]
# (BENCH_PROFILE=ci builds without LTO, for a quick first figure; the default is release)
set -euo pipefail
SECTION="${1:-all}"
case "$SECTION" in all|collect|unify|deliver|audiences|privacy) ;; *) echo "usage: $0 [all|collect|unify|deliver|audiences|privacy]" >&2; exit 2;; esac
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tandem-target}"
DURATION="${BENCH_SECONDS:-20}"
CONCURRENCY="${BENCH_CONCURRENCY:-32}"
BATCH="${BENCH_BATCH:-100}"
EVENT_BYTES="${BENCH_EVENT_BYTES:-1000}"
RECOVERY_GB="${BENCH_RECOVERY_GB:-10}"
WORK="${BENCH_DIR:-$HOME/.cache/tandem-bench}"
UNIFY_EVENTS="${BENCH_UNIFY_EVENTS:-1000000}"
UNIFY_BIG_PROFILES="${BENCH_UNIFY_BIG_PROFILES:-10000000}"
UNIFY_BIG_DIR="${BENCH_UNIFY_BIG_DIR:-$HOME/.cache/tandem-bench-unify-$UNIFY_BIG_PROFILES}"
PROFILE_USERS="${BENCH_PROFILE_USERS:-100000}"
PROFILE_RATE="${BENCH_PROFILE_RATE:-5000}"
DELIVER_EVENTS="${BENCH_DELIVER_EVENTS:-500000}"
DELIVER_OUTAGE="${BENCH_DELIVER_OUTAGE:-300}"
DELIVER_RATE="${BENCH_DELIVER_RATE:-2000}"
AUDIENCE_PROFILES="${BENCH_AUDIENCE_PROFILES:-20000}"
PERSONALIZE_USERS="${BENCH_PERSONALIZE_USERS:-100000}"
PERSONALIZE_RATE="${BENCH_PERSONALIZE_RATE:-5000}"
PRIVACY_USERS="${BENCH_PRIVACY_USERS:-1000000}"
PRIVACY_LOAD_SECONDS="${BENCH_PRIVACY_LOAD_SECONDS:-60}"
PRIVACY_EXPORTS="${BENCH_PRIVACY_EXPORTS:-50}"
PROFILE="${BENCH_PROFILE:-release}"
cargo build --profile "$PROFILE" --locked --bin tandem >/dev/null
BIN="$CARGO_TARGET_DIR/$PROFILE/tandem"
rm -rf "$WORK"; mkdir -p "$WORK"
KEY="bench-write-key-0123456789"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"

write_config() { # $1 data dir
  cat > "$WORK/tandem.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
data_dir = "$1"
[[workspaces]]
id = "bench"
name = "Bench"
[[workspaces.sources]]
id = "load"
name = "Load generator"
owner = "bench@tandem.local"
write_key = "$KEY"
TOML
}

SERVER_PID=""
start_server() { # $1 data dir, $2.. extra args; sets START_MS
  write_config "$1"
  local t0; t0=$(date +%s%N)
  TANDEM_ADMIN_TOKEN=bench-admin-token-000000 TANDEM_LOG=warn "$BIN" serve --config "$WORK/tandem.toml" "${@:2}" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  until curl -fs "$URL/readyz" >/dev/null 2>&1; do sleep 0.005; done
  START_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}
stop_server() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
trap stop_server EXIT
rss_mb() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$SERVER_PID/status"; }
load() { # extra args
  "$BIN" load --url "$URL" --write-key "$KEY" --concurrency "$CONCURRENCY" --batch "$BATCH" --event-bytes "$EVENT_BYTES" \
    --duration "$DURATION" --warmup 2 --json "$@"
}
jget() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }

collect_section() {
echo "== 1. durable ingest, full speed ($DURATION s, $CONCURRENCY connections, $BATCH events/batch, ~$EVENT_BYTES B/event)"
start_server "$WORK/data"
COLD_MS=$START_MS
FULL=$(load); echo "$FULL"
FULL_EPS=$(echo "$FULL" | jget "['events_per_second']")
FULL_RSS=$(rss_mb)
HALF_RATE=$(python3 -c "print(int($FULL_EPS/2))")
echo "== 1b. durable ingest at 50 % ($HALF_RATE events/s)"
HALF=$(load --rate "$HALF_RATE"); echo "$HALF"
HALF_RSS=$(rss_mb)
stop_server

echo "== 2. same request path, no persistence (--discard)"
start_server "$WORK/data-discard" --discard
CEIL=$(load); echo "$CEIL"
stop_server
CEIL_EPS=$(echo "$CEIL" | jget "['events_per_second']")

echo "== 3. disk ceiling: fdatasync'd sequential writes of $BATCH x ~$((EVENT_BYTES + 150)) B records"
DISK=$("$BIN" bench disk --dir "$WORK" --record-bytes $((EVENT_BYTES + 150)) --records-per-write "$BATCH" --duration 10 --json); echo "$DISK"
DISK_RPS=$(echo "$DISK" | jget "['records_per_second']")
DISK_MBPS=$(echo "$DISK" | jget "['megabytes_per_second']")

echo "== 4. recovery of a ${RECOVERY_GB} GB log"
start_server "$WORK/data-big"
TARGET=$((RECOVERY_GB * 1024 * 1024 * 1024))
while [ "$(du -sb "$WORK/data-big/logs" | cut -f1)" -lt "$TARGET" ]; do
  "$BIN" load --url "$URL" --write-key "$KEY" --concurrency "$CONCURRENCY" --batch "$BATCH" --event-bytes "$EVENT_BYTES" --duration 10 --warmup 0 --json >/dev/null
done
# A running server writes the dedup sidecar of each sealed segment in the background; wait for it
# to catch up with the fill, as it would have in normal operation.
for _ in $(seq 120); do
  SEALED=$(( $(ls "$WORK/data-big/logs/bench" | grep -c '\.seg$') - 1 ))
  SIDECARS=$(ls "$WORK/data-big/dedup/bench" 2>/dev/null | grep -c '\.dedup$' || true)
  [ "$SIDECARS" -ge "$SEALED" ] && break
  sleep 1
done
kill -9 "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
LOG_BYTES=$(du -sb "$WORK/data-big/logs" | cut -f1)
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
start_server "$WORK/data-big"
RECOVERY_MS=$START_MS
RECOVERY_RSS=$(rss_mb)
stop_server

python3 - "$FULL" "$HALF" "$CEIL" "$DISK" <<PY
import json, sys
full, half, ceil, disk = (json.loads(a) for a in sys.argv[1:5])
def lat(r, q): return r["latency_us"][q] / 1000
print()
print("tandem collect benchmark (2 cores shared by server and load generator)")
print(f"{'figure':<44}{'tandem':>14}{'reference':>14}{'ratio':>8}")
print(f"{'durable ingest, events/s':<44}{full['events_per_second']:>14,.0f}{ceil['events_per_second']:>14,.0f}{full['events_per_second']/ceil['events_per_second']:>8.2f}   (reference: same path, no persistence)")
print(f"{'durable ingest, events/s vs disk ceiling':<44}{full['events_per_second']:>14,.0f}{disk['records_per_second']:>14,.0f}{full['events_per_second']/disk['records_per_second']:>8.2f}   (reference: fdatasync'd writes, {disk['megabytes_per_second']:.0f} MB/s)")
print(f"{'ack latency at full speed p50/p99/p999 ms':<44}{lat(full,'p50'):>6.1f}/{lat(full,'p99'):.1f}/{lat(full,'p999'):.1f}")
print(f"{'ack latency at 50 % p50/p99/p999 ms':<44}{lat(half,'p50'):>6.1f}/{lat(half,'p99'):.1f}/{lat(half,'p999'):.1f}   (at {half['events_per_second']:,.0f} events/s)")
print(f"{'disk fsync latency p50/p99 ms':<44}{disk['fsync_latency_us']['p50']/1000:>6.2f}/{disk['fsync_latency_us']['p99']/1000:.2f}")
PY
echo "server peak RSS: full speed ${FULL_RSS} MiB, half load ${HALF_RSS} MiB, after recovery ${RECOVERY_RSS} MiB"
echo "cold start (empty data dir, until /readyz): ${COLD_MS} ms"
echo "recovery of a $((LOG_BYTES / 1024 / 1024)) MiB log after kill -9 (until /readyz): ${RECOVERY_MS} ms"
echo "RudderStack's sizing guide for reference: 1.7K events/s on 2 cores, 2.5K on 8"
}

ADMIN="bench-admin-token-000000"
# Unify applies the log behind collect: wait until it has caught up.
wait_unify() {
  for _ in $(seq 1200); do
    LAG=$(curl -fs -H "authorization: Bearer $ADMIN" "$URL/api/v1/workspaces/bench/unify" | jget "['lag_records']")
    [ "$LAG" = 0 ] && return 0
    sleep 1
  done
  echo "unify did not catch up (lag $LAG records)" >&2; exit 1
}
customers() { # $1 file, $2 users: user-0000000042, with a plan and an ltv
  python3 - "$1" "$2" <<'PY'
import sys
path, users = sys.argv[1], int(sys.argv[2])
plans = ["free", "starter", "pro", "enterprise"]
with open(path, "w") as f:
    f.write("user_id,email,plan,city,ltv\n")
    for i in range(users):
        f.write(f"user-{i:010d},u{i:010d}@example.com,{plans[i % 4]},City {i % 97},{(i * 37) % 5000}\n")
PY
}
unify_section() {
echo "== 5. unify: identity + profile + computed-trait updates, $UNIFY_EVENTS events, 10K profiles"
SMALL=$("$BIN" bench unify --profiles 10000 --events "$UNIFY_EVENTS" | tee -a /dev/stderr | tail -1)
echo "== 5b. the same at $UNIFY_BIG_PROFILES profiles (store kept in $UNIFY_BIG_DIR)"
BIG=$("$BIN" bench unify --profiles "$UNIFY_BIG_PROFILES" --events "$UNIFY_EVENTS" --data "$UNIFY_BIG_DIR" | tee -a /dev/stderr | tail -1)

echo "== 6. Profile API: $PROFILE_USERS customers imported, load on top, then lookups at $PROFILE_RATE/s"
start_server "$WORK/data-profiles"
customers "$WORK/customers.csv" "$PROFILE_USERS"
"$BIN" import "$WORK/customers.csv" --url "$URL" --write-key "$KEY" --json >/dev/null
"$BIN" load --url "$URL" --write-key "$KEY" --users "$PROFILE_USERS" --rate 20000 --duration 10 --warmup 0 --json >/dev/null
wait_unify
TOKEN=$(curl -fs -X POST -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' \
  -d '{"name":"bench"}' "$URL/api/v1/workspaces/bench/access-tokens" | jget "['token']")
API=$("$BIN" bench profile-api --url "$URL" --token "$TOKEN" --workspace bench --users "$PROFILE_USERS" \
  --rate "$PROFILE_RATE" --duration "${DURATION}s" --concurrency 32 | tee -a /dev/stderr | tail -1)
API_RSS=$(rss_mb)
stop_server

python3 - "$SMALL" "$BIG" "$API" <<PY
import json, sys
small, big, api = (json.loads(a) for a in sys.argv[1:4])
def n(v): return f"{v:,.0f}"
print()
print("tandem unify benchmark (2 cores; the store benchmark runs alone, the Profile API one shares the cores with the server)")
print(f"{'figure':<52}{'tandem':>12}{'reference':>12}{'ratio':>8}")
for r in (small, big):
    label = f"unify events/s at {r['profiles']:,} profiles"
    print(f"{label:<52}{n(r['events_per_second']):>12}{n(r['reference_events_per_second']):>12}{r['ratio']:>8.2f}   (reference: the same store operations alone)")
print(f"{'per-event cost µs, 10K → ' + format(big['profiles'], ',') + ' profiles':<52}{small['us_per_event']:>12.1f}{big['us_per_event']:>12.1f}{big['us_per_event']/small['us_per_event']:>8.2f}   (target ≤ 1.5)")
p, h = api["profile_api"], api["reference"]
print(f"{'Profile API lookups/s (target rate ' + format(api['target_requests_per_second'], ',') + ')':<52}{n(p['requests_per_second']):>12}{n(h['requests_per_second']):>12}{p['requests_per_second']/max(h['requests_per_second'],1):>8.2f}   (reference: GET /healthz)")
for q in ("p50", "p99", "p999"):
    print(f"{'Profile API latency ' + q + ' ms':<52}{p['latency_ms'][q]:>12.2f}{h['latency_ms'][q]:>12.2f}{p['latency_ms'][q]/max(h['latency_ms'][q],0.001):>8.2f}" + ("   (target p99 < 2 ms)" if q == "p99" else ""))
errors = sum(p['failed_by_status'].values()) + p['transport_errors']
print(f"Profile API errors: {errors} of {p['responses'] + p['transport_errors']} ({p['failed_by_status'] or 'none'}); server peak RSS $API_RSS MiB")
pop = big['populate_seconds']
print(f"population of {big['profiles']:,} profiles: " + (f"{pop/60:.1f} min" if pop else "reused from an earlier run") + f"; store {big['store_bytes']/2**30:.1f} GiB")
PY
}

deliver_section() {
echo "== 7. deliver: a backlog of $DELIVER_EVENTS events to a local webhook receiver, then a ${DELIVER_OUTAGE}s outage under $DELIVER_RATE events/s"
"$BIN" bench deliver --events "$DELIVER_EVENTS" --outage-seconds "$DELIVER_OUTAGE" --arrival-rate "$DELIVER_RATE" --data "$WORK/deliver"
}

audiences_section() {
echo "== 8. audiences: ack → Audience Entered at 10,000 and 2,000 events/s; a five-condition audience over $AUDIENCE_PROFILES profiles"
"$BIN" bench audiences --profiles "$AUDIENCE_PROFILES"

echo "== 9. personalization API: $PERSONALIZE_USERS customers imported, a policy and a public key, then requests at $PERSONALIZE_RATE/s"
start_server "$WORK/data-personalize"
customers "$WORK/personalize.csv" "$PERSONALIZE_USERS"
"$BIN" import "$WORK/personalize.csv" --url "$URL" --write-key "$KEY" --json >/dev/null
wait_unify
auth=(-H "authorization: Bearer $ADMIN" -H 'content-type: application/json')
curl -fs -X POST "${auth[@]}" "$URL/api/v1/workspaces/bench/audiences" \
  -d '{"id":"high-value","name":"High value","condition":{"trait":"ltv","op":"gte","value":4000}}' >/dev/null
curl -fs -X PUT "${auth[@]}" "$URL/api/v1/workspaces/bench/personalization" -d '{"traits":["plan","ltv"],"audiences":["high-value"],
  "rules":[{"id":"vip","slot":"banner","offer":"vip","when":{"audience":"high-value"}},
           {"id":"upsell","slot":"banner","offer":"upsell","when":{"trait":"plan","op":"eq","value":"starter"}}]}' >/dev/null
for _ in $(seq 600); do
  STATUS=$(curl -fs "${auth[@]}" "$URL/api/v1/workspaces/bench/audiences/high-value" | jget "['status']")
  [ "$STATUS" = live ] && break
  sleep 1
done
PUBLIC_KEY=$(curl -fs -X POST "${auth[@]}" -d '{"name":"bench"}' "$URL/api/v1/workspaces/bench/personalization/keys" | jget "['key']")
"$BIN" bench personalize --url "$URL" --key "$PUBLIC_KEY" --users "$PERSONALIZE_USERS" \
  --rate "$PERSONALIZE_RATE" --duration "${DURATION}s" --concurrency 32
echo "server peak RSS $(rss_mb) MiB"
stop_server
}

privacy_section() {
echo "== 10. privacy: $PRIVACY_USERS customers imported, ${PRIVACY_LOAD_SECONDS}s of load at 20,000 events/s over them"
start_server "$WORK/data-privacy"
customers "$WORK/privacy.csv" "$PRIVACY_USERS"
"$BIN" import "$WORK/privacy.csv" --url "$URL" --write-key "$KEY" --json >/dev/null
"$BIN" load --url "$URL" --write-key "$KEY" --users "$PRIVACY_USERS" --rate 20000 --duration "$PRIVACY_LOAD_SECONDS" --warmup 0 --json >/dev/null
wait_unify
STATUS=$(curl -fs -H "authorization: Bearer $ADMIN" "$URL/api/v1/workspaces/bench/unify")
LOG_BYTES=$(du -sb "$WORK/data-privacy/logs" | cut -f1)
echo "== 10a. steady ingest at 2,000 events/s, 20 s, no erasure (the reference)"
steady() { # $1 seconds
  "$BIN" load --url "$URL" --write-key "$KEY" --concurrency 8 --batch 10 --rate 2000 --duration "$1" --warmup 2 \
    --users "$PRIVACY_USERS" --json
}
QUIET=$(steady 20)
echo "== 10b. the same ingest while one person is erased"
steady 40 > "$WORK/busy.json" &
LOAD_PID=$!
sleep 5
python3 - "$URL" "$ADMIN" > "$WORK/erasure.json" <<'PY'
import json, sys, time, urllib.request
url, admin = sys.argv[1], sys.argv[2]
def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
        headers={"authorization": "Bearer " + admin, "content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
t0 = time.time()
r = call("POST", "/api/v1/workspaces/bench/privacy/requests", {"type": "erasure", "identifier": {"type": "user_id", "id": "user-0000000042"}})
while r["status"] not in ("completed", "failed"):
    time.sleep(0.05)
    r = call("GET", "/api/v1/workspaces/bench/privacy/requests/" + r["id"])
r["wall_seconds"] = time.time() - t0
print(json.dumps(r))
PY
wait "$LOAD_PID"
BUSY=$(cat "$WORK/busy.json")
echo "== 10c. $PRIVACY_EXPORTS access requests (exports) for random people, and their 360° views"
EXPORTS=$(python3 - "$URL" "$ADMIN" "$PRIVACY_USERS" "$PRIVACY_EXPORTS" <<'PY'
import json, random, sys, time, urllib.request
url, admin, users, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
        headers={"authorization": "Bearer " + admin, "content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
random.seed(7)
people = [f"user-{random.randrange(100, users):010d}" for _ in range(count)]
exports, views = [], []
for person in people:
    t0 = time.time()
    r = call("POST", "/api/v1/workspaces/bench/privacy/requests", {"type": "access", "identifier": {"type": "user_id", "id": person}})
    while r["status"] not in ("completed", "failed"):
        time.sleep(0.002)
        r = call("GET", "/api/v1/workspaces/bench/privacy/requests/" + r["id"])
    call("GET", "/api/v1/workspaces/bench/privacy/requests/" + r["id"] + "/export")
    exports.append((time.time() - t0) * 1000)
    t0 = time.time()
    call("GET", "/api/v1/workspaces/bench/profiles/user_id:" + person)
    views.append((time.time() - t0) * 1000)
def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]
print(json.dumps({"export_ms": {"p50": pct(exports, 0.5), "p99": pct(exports, 0.99)}, "view_ms": {"p50": pct(views, 0.5), "p99": pct(views, 0.99)}}))
PY
)
stop_server
python3 - "$STATUS" "$QUIET" "$BUSY" "$EXPORTS" "$LOG_BYTES" "$PRIVACY_USERS" "$WORK/erasure.json" <<'PY'
import json, sys
status, quiet, busy, exports = (json.loads(a) for a in sys.argv[1:5])
log_bytes, users = int(sys.argv[5]), int(sys.argv[6])
erasure = json.load(open(sys.argv[7]))
print()
print("tandem privacy benchmark (2 cores; load generator, server and requests share them)")
print(f"store: {users:,} people (imported customers, then load over them), {status['log_end_offset']:,} log records, log {log_bytes/2**30:.2f} GiB")
print(f"erasure of one person: {erasure['status']} in {erasure['wall_seconds']:.2f} s wall ({erasure.get('took_ms', 0)/1000:.2f} s server-side); per store:")
for step in erasure["steps"]:
    print(f"    {step['store']:<26}{step['status']:<12}{step['took_ms']:>8} ms  {step['count']:>8}  {step['detail'][:90]}")
print(f"{'figure':<52}{'tandem':>12}{'reference':>12}{'ratio':>8}")
for q in ("p50", "p99", "p999"):
    b, r = busy["latency_us"][q] / 1000, quiet["latency_us"][q] / 1000
    print(f"{'ingest ack latency ' + q + ' ms during the erasure':<52}{b:>12.2f}{r:>12.2f}{b/max(r,0.001):>8.2f}   (reference: the same load, no erasure)")
e, v = exports["export_ms"], exports["view_ms"]
for q in ("p50", "p99"):
    print(f"{'access request (export) ' + q + ' ms':<52}{e[q]:>12.1f}{v[q]:>12.1f}{e[q]/max(v[q],0.001):>8.2f}   (reference: the 360° view of the same person)")
PY
}

case "$SECTION" in
  all) collect_section; unify_section; deliver_section; audiences_section; privacy_section;;
  privacy) privacy_section;;
  audiences) audiences_section;;
  collect) collect_section;;
  unify) unify_section;;
  deliver) deliver_section;;
esac
