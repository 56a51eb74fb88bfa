#!/usr/bin/env bash
# Runs the tests again on the supported Node.js LTS lines besides the machine's own:
#   Node 24 (active LTS): the whole suite, real brokers included;
#   Node 22 (maintenance LTS): unit tests, examples, and every transport's conformance suites
#   (transport and core) against the real brokers.
# Each line comes from the npm registry (scripts/node-line.sh). Any failure fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

run_on() {
  local line="$1"
  shift
  local bin
  bin="$(bash scripts/node-line.sh "$line")"
  echo "== Node $line ($("$bin/node" --version)): $*"
  PATH="$bin:$PATH" "$@"
}

run_on 24 npx vitest run
run_on 22 npx vitest run --project '@nuropb/*' --project '@nuropb-examples/*'
run_on 22 npx vitest run --project integration-tests conformance.test core.test
