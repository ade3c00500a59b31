#!/usr/bin/env bash
# Runs every test of tandem on a fresh machine: installs what the tests need (idempotently),
# builds once, runs the Rust test suite (unit, property, black-box, crash and fault tests) and the
# SDK compatibility tests (real Segment SDKs from PyPI and npm, analytics-next in Chromium) and the
# console's browser tests (Chromium driven by playwright-core).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tandem-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
bash scripts/install-test-deps.sh

step "build (profile ci: optimised like release, without LTO; the black-box and crash tests drive the real binary under load)"
cargo build --profile ci --locked --workspace --all-targets

step "rust tests: unit, property, black-box, crash, faults"
cargo nextest run --cargo-profile ci --locked --workspace --no-fail-fast

step "sdk compatibility: analytics-python, analytics-node, analytics-next in chromium"
TANDEM_BIN="$CARGO_TARGET_DIR/ci/tandem" bash tests/sdk/run.sh

step "console: end to end in chromium (playwright-core), per role, with a real webhook receiver"
TANDEM_BIN="$CARGO_TARGET_DIR/ci/tandem" bash tests/console/run.sh
