#!/usr/bin/env bash
# Make sure Debian's redis-server is on PATH for the fleet and load-test-worker tests.
# Idempotent: does nothing when it is already installed. Installing needs root (apt-get);
# without it, say why and exit non-zero so the caller can skip or fail. The package's own
# service is not used: each test session starts its own redis-server on a free port.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_redis: redis-server is missing and we are not root;" \
         "install it with: sudo apt-get install -y redis-server" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_redis: redis-server is missing and apt-get is not available;" \
         "install Redis with this system's package manager" >&2
    exit 1
fi

echo "install_redis: installing Debian's redis-server package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends redis-server >/dev/null
if ! command -v redis-server >/dev/null 2>&1; then
    echo "install_redis: apt-get finished but redis-server is still missing" >&2
    exit 1
fi
echo "install_redis: $(redis-server --version)" >&2
