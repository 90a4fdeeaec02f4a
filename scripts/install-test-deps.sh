#!/usr/bin/env bash
# Installs the Debian packages the test suite needs beyond npm: protoc with the gRPC Python plugin
# and Python's grpcio/protobuf, for the test in which a Python client calls infergate; openssl
# makes the certificates of the TLS test. Does nothing
# when they are present; needs root (or sudo) and apt-get otherwise.
set -euo pipefail
packages=(protobuf-compiler protobuf-compiler-grpc python3-grpcio python3-protobuf openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "install these packages for the Python client test: ${missing[*]}" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages for the tests: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
