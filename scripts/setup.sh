# Sourced by scripts/demo and scripts/test: everything a fresh Debian machine with Python needs.
# - a redis-server binary (Debian's package) when there is none;
# - Debian's chromium when there is none (the dashboard's browser tests drive it with Playwright; Playwright's own
#   browser download is never used);
# - a virtual environment in .venv with Redswitch, its dev dependencies and the dashboard's, refreshed when pyproject.toml changes.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v redis-server >/dev/null 2>&1; then
    echo "setup: installing redis-server from Debian's packages" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

if [ ! -x /usr/bin/chromium ]; then
    echo "setup: installing chromium from Debian's packages" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv >/dev/null 2>&1; then
        echo "setup: installing python3-venv from Debian's packages" >&2
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        rm -rf .venv
        "$PYTHON" -m venv .venv
    fi
fi

stamp=".venv/.redswitch-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing Python dependencies into .venv" >&2
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    .venv/bin/python -m pip install -q -e '.[dev,dashboard]'
    echo "$want" > "$stamp"
fi
