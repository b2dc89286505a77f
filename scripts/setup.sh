#!/usr/bin/env bash
# Installs what mqtt-kv needs on a fresh machine: Mosquitto (Debian's package) when it is
# missing, and a virtual environment .venv with the package and its development tools.
# Safe to run again: it only does what is not done yet.
set -euo pipefail
cd "$(dirname "$0")/.."

# The broker, and the stock clients (mosquitto_pub, mosquitto_sub, mosquitto_rr) that the
# README and the tests use to show that any MQTT client can talk to mqtt-kv.
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
# curl reads a replica's metrics in the README.
command -v curl >/dev/null 2>&1 || missing+=(curl)
# A secured cluster's TLS certificates (scripts/tls-ca.sh).
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# With --browser (the test suite): headless Chromium and its WebDriver, which test the page
# `kvclient web` serves as a person sees it (tests/test_web.py).
if [ "${1:-}" = --browser ]; then
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  # promtool checks the metrics' text format as Prometheus reads it (tests/test_metrics_cluster.py).
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]} from Debian's packages"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

stamp=.venv/.mqtt-kv-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating .venv with mqtt-kv and its development tools"
  python3 -m venv .venv
  if ! .venv/bin/python -m pip install -q -e '.[dev]' >.venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    exit 1
  fi
  .venv/bin/python -c 'import kvserver, monitor, kvclient, paho.mqtt, pydantic, typer'
  echo "$want" > "$stamp"
fi
