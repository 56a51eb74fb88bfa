#!/usr/bin/env bash
# Installs, when missing, what the test suite needs from Debian: the brokers the harness starts
# (RabbitMQ, NATS, Redis), the Debian Python packages the live Python NuroPb peer imports, and
# chromium, the browser the gateway tests drive headless.
# Installs nothing that is already there; needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(rabbitmq-server nats-server redis-server python3 python3-pika python3-tornado
  python3-requests python3-cryptography chromium)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "test dependencies: all present"
  exit 0
fi

echo "test dependencies: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y "${missing[@]}"
