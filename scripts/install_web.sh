#!/usr/bin/env bash
# Install the browser demo client's npm packages and generate gen/tickwire.json (the pbjs
# descriptor) and gen/wire.js (the .proto's enums as ES constants, tools/genwire.mjs).
# Idempotent: `npm ci` runs only when node_modules does not match package-lock.json
# (tracked by a stamp holding the lockfile's hash); the build always runs (it is fast and
# picks up proto/tickwire.proto changes).
set -euo pipefail

WEB="$(cd "$(dirname "${BASH_SOURCE[0]}")/../client_demo/web" && pwd)"
cd "$WEB"

if ! command -v npm >/dev/null 2>&1; then
    echo "install_web: npm is not installed (Node.js 20+ is needed for the demo client)" >&2
    exit 1
fi

STAMP=node_modules/.tickwire-lock.sha256
want="$(sha256sum package.json package-lock.json | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ] || [ ! -f node_modules/protobufjs/dist/light/protobuf.min.js ] \
        || [ ! -x node_modules/.bin/pbjs ]; then
    echo "install_web: npm ci in $WEB" >&2
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" > "$STAMP"
fi

npm run --silent build
echo "install_web: built $WEB/gen/tickwire.json and gen/wire.js" >&2
