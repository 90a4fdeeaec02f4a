#!/usr/bin/env bash
# Runs the benchmarks (bench/run.mjs) with what they need: h2load (Debian nghttp2-client,
# installed when missing), a fresh build of dist/, and a file-descriptor limit that holds
# 10,000 streams (each process opens one socket per stream). Arguments go to run.mjs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v h2load >/dev/null; then
  echo "bench: installing h2load (nghttp2-client)"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq nghttp2-client >/dev/null
  fi
fi

want=65536
if [ "$(ulimit -n)" -lt "$want" ]; then
  ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
if [ "$(ulimit -n)" -lt 12000 ]; then
  echo "bench: file-descriptor limit is $(ulimit -n): the 10,000 held streams need about 10,100 per process" >&2
fi

npm run --silent build
exec node bench/run.mjs "$@"
