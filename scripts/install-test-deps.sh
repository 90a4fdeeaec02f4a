#!/usr/bin/env bash
# Installs the Debian packages the test suite needs beyond npm: protoc with the gRPC Python plugin,
# the well-known .proto files (libprotobuf-dev: google/protobuf/struct.proto, which the API imports;
# only a recommendation of protobuf-compiler, so not installed with it here) and Python's
# grpcio/protobuf, for the test in which a Python client calls infergate; openssl
# makes the certificates of the TLS test; redis-server is started (never as a system service) by
# the tests of the Redis scale-out, on a free loopback port of their own; prometheus brings promtool,
# which test/e2e/deploy-monitoring.test.ts runs on deploy/prometheus/alerts.yaml; chromium is the
# headless browser test/browser/console.test.ts drives (playwright-core, no browser download). Does nothing
# when they are present; needs root (or sudo) and apt-get otherwise.
set -euo pipefail
packages=(protobuf-compiler libprotobuf-dev protobuf-compiler-grpc python3-grpcio python3-protobuf openssl redis-server prometheus chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "install these packages for the tests: ${missing[*]}" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages for the tests: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package starts a system Redis where it can; the tests run their own, so stop it.
if [[ " ${missing[*]} " == *" redis-server "* ]] && command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
  $sudo systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
# Likewise a system Prometheus: only its promtool is wanted.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
