#!/usr/bin/env bash
# Prints the directory of a Node.js project with playwright-core, for the browser test of
# the HTML report (scripts/browser-check.mjs); installs Debian's chromium and
# playwright-core (npm, pinned) once, idempotently.
#
#   node "$(scripts/browser-env.sh)/../browser-check.mjs" …   # see .ci/run
set -euo pipefail
DIR=${1:-$HOME/.cache/roundtrip-browser}
PLAYWRIGHT_VERSION=1.64.1
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium (once per machine)…" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2 \
    || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2; }
fi
if [ ! -f "$DIR/node_modules/playwright-core/package.json" ] \
  || ! grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" "$DIR/node_modules/playwright-core/package.json"; then
  mkdir -p "$DIR"
  (cd "$DIR" && npm install --silent --no-audit --no-fund "playwright-core@$PLAYWRIGHT_VERSION" >&2)
fi
echo "$DIR"
