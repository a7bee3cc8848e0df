#!/usr/bin/env bash
# Makes a virtual environment with the pinned requirements files given, once, and
# prints its path; a later call with the same files does nothing but print it.
#
#   venv=$(scripts/python-env.sh DIR REQUIREMENTS...)
set -euo pipefail
venv="${1:?usage: scripts/python-env.sh DIR REQUIREMENTS...}"
shift
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
stamp="$venv/.requirements.sha256"
want="$(cat "$@" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  args=()
  for f in "$@"; do args+=(-r "$f"); done
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${args[@]}" >&2
  echo "$want" >"$stamp"
fi
echo "$venv"
