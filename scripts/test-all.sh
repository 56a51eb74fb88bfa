#!/usr/bin/env bash
# The whole test suite from a fresh Debian machine: installs what the tests need when missing
# (brokers, the Python peer's packages), installs npm dependencies, builds, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
npm ci --no-audit --no-fund
npx turbo run build
npm test
