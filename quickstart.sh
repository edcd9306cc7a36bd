#!/usr/bin/env bash
# One entry point that does its own set-up on a fresh machine, then runs blinkgen:
#   ./quickstart.sh generate "a grinning face" -o face.png    # image from the embedded model
#   ./quickstart.sh test                                       # the whole test suite
# It creates .venv (Python >= 3.11), installs blinkgen with the CPU torch wheel pinned in
# pyproject.toml, and re-installs only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for c in python3.11 python3.12 python3.13 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then PY="$c"; break; fi
  done
fi
[ -n "$PY" ] || { echo "quickstart: Python 3.11 or newer is required" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.blinkgen-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "quickstart: installing blinkgen and its dependencies into .venv (first run only)..." >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -e ".[test]" >&2
  echo "$want" > "$stamp"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ "${1:-}" = "test" ]; then
  shift
  # The web page's tests drive a real headless Chromium (Debian's package).
  if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "quickstart: installing Debian's chromium for the browser tests..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) >&2 \
      || echo "quickstart: could not install chromium; the browser test will be skipped" >&2
  fi
  exec .venv/bin/python -m pytest -n 2 --timeout 900 -p no:cacheprovider "$@"
fi
exec .venv/bin/blinkgen "$@"
