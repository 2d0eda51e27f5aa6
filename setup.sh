#!/usr/bin/env bash
# The project's two set-up commands (see README.md):
#   ./setup.sh demo [ARGS]  build the boot image and boot the emulated SABRE Lite from a
#                           TLS-PSK NBD root served on loopback
#   ./setup.sh test [ARGS]  install what the tests need, then run lint, types and all tests
# Both install Debian packages (with sudo when not root) and make .venv with Python 3.13.
# PYTHON=/path/to/python3.13 overrides the interpreter search.
set -euo pipefail
cd "$(dirname "$0")"

DEBS_COMMON=(qemu-utils nbdkit nbd-server libnbd-bin qemu-system-arm mmdebstrap arch-test
             device-tree-compiler swig dnsmasq-base iproute2 socat kmod cpio xz-utils busybox
             u-boot-tools e2fsprogs qemu-user-static)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_debs() {
    local missing=()
    for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
    [ ${#missing[@]} = 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

usable_python() {  # a Python >= 3.13 whose ssl module has PSK callbacks
    "$1" -c 'import sys, ssl; assert sys.version_info[:2] >= (3, 13); ssl.SSLContext.set_psk_client_callback' >/dev/null 2>&1
}

find_python() {
    local cands=()
    [ -n "${PYTHON:-}" ] && { usable_python "$PYTHON" && echo "$PYTHON" && return; die "PYTHON=$PYTHON is not a Python >= 3.13 with ssl PSK support"; }
    command -v python3.13 >/dev/null && cands+=("$(command -v python3.13)")
    local root=""
    if command -v pyenv >/dev/null; then root=$(pyenv root); elif [ -d "$HOME/.pyenv" ]; then root=$HOME/.pyenv; fi
    [ -n "$root" ] && cands+=($(ls -d "$root"/versions/3.13*/bin/python3.13 2>/dev/null | sort -rV))
    command -v uv >/dev/null && cands+=("$(uv python find 3.13 2>/dev/null || true)")
    for c in "${cands[@]}"; do
        [ -n "$c" ] && usable_python "$c" && { echo "$c"; return; }
    done
    die "Python 3.13 not found (needed for ssl PSK support). Install one, then re-run:
  pyenv install 3.13        (pyenv's versions are found automatically)
  uv python install 3.13
  or point PYTHON=/path/to/python3.13 at one"
}

make_venv() {
    local py; py=$(find_python)
    if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.version_info[:2] >= (3, 13)' 2>/dev/null; then
        say "creating .venv with $py"
        rm -rf .venv
        "$py" -m venv .venv
    fi
    say "installing the project into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
}

cmd_test() {
    install_debs "${DEBS_COMMON[@]}"
    make_venv
    say "ruff"
    .venv/bin/ruff check appliance board image tests
    say "mypy --strict"
    .venv/bin/mypy
    say "pytest"
    local rc=0
    .venv/bin/pytest "$@" || rc=$?
    [ "$rc" = 5 ] && die "pytest collected no tests"
    return "$rc"
}

cmd_demo() {
    install_debs "${DEBS_COMMON[@]}"
    make_venv
    exec .venv/bin/appliance demo "$@"
}

case "${1:-}" in
    test) shift; cmd_test "$@" ;;
    demo) shift; cmd_demo "$@" ;;
    *) echo "usage: ./setup.sh demo [ARGS] | ./setup.sh test [PYTEST-ARGS]" >&2; exit 2 ;;
esac
