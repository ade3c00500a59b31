#!/usr/bin/env bash
# Refreshes the console's vendored libraries from npm (pinned versions below). Not part of any
# build: the files it writes are committed, so `cargo build` needs neither Node nor a network.
#   bash scripts/vendor-console.sh
# Preact's hooks import the bare specifier "preact"; browsers need a path (an import map would be
# an inline script, which the console's Content-Security-Policy forbids), so it is rewritten to
# the file beside it. Nothing else is changed.
set -euo pipefail
PREACT=11.2.0
HTM=3.1.1
ECHARTS=6.1.0
cd "$(dirname "$0")/.."
OUT=crates/tandem-server/console/vendor
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "preact@$PREACT" "htm@$HTM" "echarts@$ECHARTS" >/dev/null)
for package in "preact-$PREACT" "htm-$HTM" "echarts-$ECHARTS"; do
  mkdir -p "$WORK/$package" && tar xzf "$WORK/$package.tgz" -C "$WORK/$package"
done
mkdir -p "$OUT"
cp "$WORK/preact-$PREACT/package/dist/preact.mjs" "$OUT/preact.mjs"
sed 's|from"preact"|from"./preact.mjs"|g' "$WORK/preact-$PREACT/package/hooks/dist/hooks.mjs" > "$OUT/preact-hooks.mjs"
cp "$WORK/htm-$HTM/package/dist/htm.mjs" "$OUT/htm.mjs"
cp "$WORK/echarts-$ECHARTS/package/dist/echarts.esm.min.mjs" "$OUT/echarts.esm.min.mjs"
# Source map comments point at files not shipped.
sed -i '/^\/\/# sourceMappingURL=/d' "$OUT"/*.mjs
cp "$WORK/preact-$PREACT/package/LICENSE" "$OUT/LICENSE.preact"
cp "$WORK/htm-$HTM/package/LICENSE" "$OUT/LICENSE.htm"
cp "$WORK/echarts-$ECHARTS/package/LICENSE" "$OUT/LICENSE.echarts"
cp "$WORK/echarts-$ECHARTS/package/NOTICE" "$OUT/NOTICE.echarts"
cat > "$OUT/VERSIONS" <<TXT
preact $PREACT (dist/preact.mjs, hooks/dist/hooks.mjs with its import of "preact" made relative)
htm $HTM (dist/htm.mjs)
echarts $ECHARTS (dist/echarts.esm.min.mjs)
TXT
grep -q 'from"preact"' "$OUT/preact-hooks.mjs" && { echo "hooks still import a bare specifier"; exit 1; }
echo "vendored into $OUT:"; ls -l "$OUT"
