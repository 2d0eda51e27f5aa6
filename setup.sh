#!/usr/bin/env bash
# The project's two set-up commands (see README.md):
#   ./setup.sh demo [ARGS]  build the boot image and boot the emulated SABRE Lite from a
#                           TLS-PSK NBD root served on loopback
#   ./setup.sh test [ARGS]  install what the tests need, then run lint, types and all tests
# Both install Debian packages (with sudo when not root) and make .venv with Python 3.13.
# PYTHON=/path/to/python3.13 overrides the interpreter search.
set -euo pipefail
cd "$(dirname "$0")"

DEBS_COMMON=(qemu-utils nbdkit nbd-server libnbd-bin mmdebstrap arch-test
             device-tree-compiler swig dnsmasq-base iproute2 socat kmod cpio xz-utils busybox
             u-boot-tools e2fsprogs qemu-user-static)

# Debian 12's QEMU 7.2 drops i.MX UART input after about one line, so the demo board's
# console would not take commands: on bookworm, QEMU's system emulator comes from
# bookworm-backports (QEMU 10), pinned so that nothing else is taken from there.
QEMU_FROM_BACKPORTS=(qemu-system-arm qemu-system-common qemu-system-data)
BACKPORTS_SOURCES=/etc/apt/sources.list.d/nbdroot-imx6-backports.sources
BACKPORTS_PIN=/etc/apt/preferences.d/nbdroot-imx6-qemu

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

codename() { (. /etc/os-release && echo "${VERSION_CODENAME:-}"); }

bookworm_mirror() {  # the Debian mirror this machine's apt already uses for bookworm
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        awk 'BEGIN { RS = "" }
             /(^|\n)Suites:[^\n]*[ \t]bookworm([ \t\n]|$)/ {
                 if (match($0, /(^|\n)URIs:[ \t]*[^ \t\n]+/)) {
                     u = substr($0, RSTART, RLENGTH); sub(/^\n?URIs:[ \t]*/, "", u)
                     print u; exit } }' "$f"
    done
    # one-line sources: deb [options] URI bookworm components
    sed -E -n 's/^deb[ \t]+(\[[^]]*\][ \t]+)?([^ \t]+)[ \t]+bookworm[ \t].*/\2/p' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true
}

add_qemu_backports() {  # bookworm only: QEMU 10 from bookworm-backports, pinned to QEMU
    [ "$(codename)" = bookworm ] || return 0
    [ -f "$BACKPORTS_SOURCES" ] && [ -f "$BACKPORTS_PIN" ] && return 0
    local mirror; mirror=$(bookworm_mirror | sed -n 1p)
    [ -n "$mirror" ] || die "no apt source for Debian bookworm found; add bookworm-backports by hand"
    say "adding bookworm-backports ($mirror) for QEMU 10, pinned to ${QEMU_FROM_BACKPORTS[*]}"
    printf '%s\n' "# nbdroot-imx6 (setup.sh): QEMU 10, whose i.MX UART takes console input." \
        "Types: deb" "URIs: $mirror" "Suites: bookworm-backports" "Components: main" \
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
        | as_root tee "$BACKPORTS_SOURCES" >/dev/null
    printf '%s\n' "# nbdroot-imx6 (setup.sh): take only QEMU's system emulator from bookworm-backports." \
        "Package: *" "Pin: release n=bookworm-backports" "Pin-Priority: 100" "" \
        "Package: ${QEMU_FROM_BACKPORTS[*]}" "Pin: release n=bookworm-backports" "Pin-Priority: 500" \
        | as_root tee "$BACKPORTS_PIN" >/dev/null
    as_root apt-get update -q
}

qemu_is_new() {  # qemu-system-arm 10 or newer is installed
    case "$(dpkg-query -W -f='${Version}' qemu-system-arm 2>/dev/null)" in
        1:[1-9][0-9].*) return 0 ;; *) return 1 ;;
    esac
}

install_qemu() {  # QEMU >= 10 (see QEMU_FROM_BACKPORTS)
    qemu_is_new && return 0
    add_qemu_backports
    say "installing QEMU 10 (${QEMU_FROM_BACKPORTS[*]})"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${QEMU_FROM_BACKPORTS[@]}"
    qemu_is_new || die "qemu-system-arm $(dpkg-query -W -f='${Version}' qemu-system-arm) is" \
        "installed, but the board's console needs QEMU >= 10"
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

test_workers() {  # pytest-xdist workers: TEST_WORKERS, else one a core, at most 4
    # A system test is one QEMU (one vCPU thread, 1 GiB of guest RAM) most of the time,
    # so on 2 cores two of them run side by side.
    if [ -n "${TEST_WORKERS:-}" ]; then
        case "$TEST_WORKERS" in *[!0-9]*) die "TEST_WORKERS=$TEST_WORKERS is not a number" ;; esac
        echo "$TEST_WORKERS"; return
    fi
    local n; n=$(nproc)
    [ "$n" -gt 4 ] && n=4
    echo "$n"
}

cmd_test() {
    install_debs "${DEBS_COMMON[@]}"
    install_qemu
    make_venv
    say "ruff"
    .venv/bin/ruff check appliance board image tests
    say "mypy --strict"
    .venv/bin/mypy
    local workers; workers=$(test_workers)
    say "pytest ($workers workers; TEST_WORKERS=N to change, 0 for none)"
    local rc=0
    .venv/bin/pytest -n "$workers" --dist loadgroup "$@" || rc=$?
    [ "$rc" = 5 ] && die "pytest collected no tests"
    return "$rc"
}

cmd_demo() {
    install_debs "${DEBS_COMMON[@]}"
    install_qemu
    make_venv
    exec .venv/bin/appliance demo "$@"
}

case "${1:-}" in
    test) shift; cmd_test "$@" ;;
    demo) shift; cmd_demo "$@" ;;
    *) echo "usage: ./setup.sh demo [ARGS] | ./setup.sh test [PYTEST-ARGS]" >&2; exit 2 ;;
esac
