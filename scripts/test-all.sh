#!/usr/bin/env bash
# The whole test suite from a fresh Debian machine: installs what the tests need when missing
# (brokers, the Python peer's packages), installs npm dependencies, builds, and runs every test:
# on the machine's Node, then on Node 24 and 22 (scripts/test-node-lines.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
npm ci --no-audit --no-fund
npx turbo run build
npm test
bash scripts/test-node-lines.sh
