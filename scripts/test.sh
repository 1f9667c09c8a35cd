#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it (after `make install`).
# Chromium for the browser tests comes from Debian's packages; scripts/install_chromium.sh
# installs it when missing (as root); scripts/install_redis.sh does the same for Debian's
# redis-server (the fleet tests). Without them those tests skip locally and fail under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
    bash scripts/install_chromium.sh || echo "test.sh: Chromium unavailable (see above)" >&2
fi
if ! command -v redis-server >/dev/null 2>&1; then
    bash scripts/install_redis.sh || echo "test.sh: redis-server unavailable (see above)" >&2
fi

.venv/bin/ruff check .
# bench/ runs too: with --benchmark-disable (pyproject) each benchmark body runs once as a
# smoke test; timings are taken only by `make bench`.
.venv/bin/pytest tests bench "$@"
