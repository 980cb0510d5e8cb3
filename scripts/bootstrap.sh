# Sourced by scripts/serve and scripts/test: everything they need on a fresh Debian machine.
#   - PostgreSQL server binaries (apt-get install when missing and we are root)
#   - Docker engine and a static busybox for the test image (installed, not started)
#   - Chromium for the browser tests (scripts/test only: ensure_chromium)
#   - .venv with the project and its test tools installed (re-installed when pyproject.toml changes);
#     JOBLEDGER_EXTRAS names the extras (default `test`; scripts/bench adds `bench`)
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${JOBLEDGER_VENV:-$ROOT/.venv}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        say "missing: $* — install it (apt-get install $*) or run as root to have it installed"
        exit 1
    fi
    say "installing $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold "$@" >/dev/null
}

ensure_postgres() {
    if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
        return
    fi
    # jobledger runs its own clusters; keep Debian from creating and starting a system one.
    mkdir -p /etc/postgresql-common
    [ -e /etc/postgresql-common/createcluster.conf ] ||
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    apt_install postgresql
}

ensure_docker() {
    local missing=()
    command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    # scripts/build-test-image copies this busybox into the test image.
    [ -x /bin/busybox ] && dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

ensure_venv() {
    local py="${PYTHON:-python3}"
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        say "jobledger needs Python >= 3.11 (set PYTHON=/path/to/python3.11)"
        exit 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        "$py" -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && "$py" -m venv "$VENV"; }
    fi
    local extras="${JOBLEDGER_EXTRAS:-test}"
    local stamp="$VENV/.jobledger-installed"
    [ "$extras" = test ] || stamp="$stamp-${extras//,/-}"
    if [ ! -e "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        say "installing jobledger and its dependencies ($extras) into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e "$ROOT[$extras]"
        touch "$stamp"
    fi
}

# Called by scripts/test only (serve needs no browser): the dashboard's browser tests drive
# Debian's Chromium through Playwright, which cannot download browser builds of its own.
ensure_chromium() {
    command -v chromium >/dev/null 2>&1 && return
    if [ "$(id -u)" -ne 0 ]; then
        say "chromium is missing: browser tests will be skipped (apt-get install chromium)"
        return
    fi
    apt_install chromium
}

ensure_postgres
ensure_docker
ensure_venv
