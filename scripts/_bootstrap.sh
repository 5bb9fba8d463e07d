# shellcheck shell=bash
# Shared set-up for scripts/test and scripts/demo (sourced, not executed).
#
# After sourcing, the current directory is the repository root and these are defined:
#   wb_ensure_venv            create .venv (python3.11, else python3) and `pip install -e '.[dev]'`
#                             when it is missing or pyproject.toml is newer than the install stamp
#   wb_ensure_system_packages apt-get install chromium, redis-server and postgresql when missing
#                             (as root only; otherwise just says what is missing)

WB_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$WB_REPO_ROOT" || exit 1

WB_VENV=.venv
WB_STAMP="$WB_VENV/.whiteboard-install-stamp"
WB_APT_UPDATED=0

wb_log() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
}

wb_is_root() {
    [[ "$(id -u)" -eq 0 ]]
}

# wb_apt_install PKG... — quiet, non-interactive install (apt-get update first, once per run).
wb_apt_install() {
    local log
    log="$(mktemp "${TMPDIR:-/tmp}/wb-apt.XXXXXX")"
    wb_log "installing Debian packages: $*"
    if [[ "$WB_APT_UPDATED" -eq 0 ]]; then
        if ! DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1; then
            wb_log "apt-get update failed:"
            tail -n 20 "$log" >&2
            rm -f "$log"
            return 1
        fi
        WB_APT_UPDATED=1
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$log" 2>&1; then
        wb_log "apt-get install $* failed:"
        tail -n 20 "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

wb_can_apt() {
    wb_is_root && command -v apt-get >/dev/null 2>&1
}

wb_create_venv() {
    local python
    if command -v python3.11 >/dev/null 2>&1; then
        python=python3.11
    elif command -v python3 >/dev/null 2>&1; then
        python=python3
    else
        wb_log "neither python3.11 nor python3 is on PATH"
        return 1
    fi
    wb_log "creating $WB_VENV with $python"
    if "$python" -m venv "$WB_VENV"; then
        return 0
    fi
    # Debian's python3 lacks ensurepip until python3-venv is installed.
    rm -rf "$WB_VENV"
    if wb_can_apt; then
        local minor
        minor="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        wb_apt_install "python${minor}-venv" || wb_apt_install python3-venv || return 1
        "$python" -m venv "$WB_VENV" && return 0
        rm -rf "$WB_VENV"
    fi
    wb_log "could not create $WB_VENV (on Debian: apt-get install python3-venv)"
    return 1
}

wb_ensure_venv() {
    if [[ ! -e "$WB_VENV/bin/python" && ! -L "$WB_VENV/bin/python" ]]; then
        wb_create_venv || return 1
    elif ! "$WB_VENV/bin/python" -c '' >/dev/null 2>&1; then
        # Never delete it ourselves: it may belong to someone else or be in use.
        wb_log "$WB_VENV/bin/python does not run (its interpreter moved or is unreadable by $(id -un));" \
            "remove $WB_VENV and try again"
        return 1
    fi
    if [[ ! -f "$WB_STAMP" || pyproject.toml -nt "$WB_STAMP" ]]; then
        wb_log "installing the project into $WB_VENV (pip install -e '.[dev]')"
        "$WB_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]' || return 1
        touch "$WB_STAMP"
    fi
}

wb_ensure_system_packages() {
    local -a missing=()
    [[ -x /usr/bin/chromium ]] || missing+=(chromium)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
    if [[ "${#missing[@]}" -eq 0 ]]; then
        return 0
    fi
    if wb_can_apt; then
        # A failed install is reported but not fatal: the tests that need the
        # missing program fail with a clear message of their own.
        wb_apt_install "${missing[@]}" || wb_log "continuing without: ${missing[*]}"
    else
        wb_log "missing system packages (install as root: apt-get install ${missing[*]}); tests that need them will fail"
    fi
}
