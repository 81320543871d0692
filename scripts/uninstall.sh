#!/usr/bin/env bash
# Removes what scripts/install.sh installed: stops and disables the service, removes the unit and
# the binary. The configuration (/etc/asterai) and the data (/var/lib/asterai: database, media,
# recordings) stay, with the asterai user that owns them, unless --purge.
#
#   sudo scripts/uninstall.sh                  keep config and data
#   sudo scripts/uninstall.sh --purge          remove them too, and the user and group asterai
#   scripts/uninstall.sh --prefix DIR          what `install.sh --prefix DIR` installed
#   scripts/uninstall.sh --dry-run             print each action, change nothing
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/uninstall.sh [--prefix DIR] [--purge] [--dry-run] [--help]

Stops and disables asterai.service, removes /etc/systemd/system/asterai.service and
/usr/local/bin/asterai, and reloads systemd. Keeps /etc/asterai and /var/lib/asterai.

Options:
  --prefix DIR  Remove what `install.sh --prefix DIR` installed under DIR (no systemctl, no
                users).
  --purge       Also remove /etc/asterai, /var/lib/asterai (the database, media and
                recordings), /var/cache/asterai, /var/log/asterai, and the user and group
                asterai. Asterisk's files elsewhere are not touched.
  --dry-run     Print each action without doing it.
  -h, --help    This help.
EOF
}

die() {
    echo "uninstall.sh: $*" >&2
    exit 1
}

PREFIX=""
PURGE=0
DRY_RUN=0
while (($#)); do
    case "$1" in
        --prefix)
            (($# >= 2)) || die "--prefix needs a directory"
            PREFIX=$2
            shift 2
            ;;
        --prefix=*)
            PREFIX=${1#--prefix=}
            shift
            ;;
        --purge)
            PURGE=1
            shift
            ;;
        --dry-run)
            DRY_RUN=1
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown argument: $1"
            ;;
    esac
done

ROOT=""
if [[ -n $PREFIX ]]; then
    ROOT=$(realpath -m -- "$PREFIX")
    [[ $ROOT != / ]] || ROOT=""
fi
SYSTEM=1
[[ -z $ROOT ]] || SYSTEM=0
BIN=$ROOT/usr/local/bin/asterai
UNIT=$ROOT/etc/systemd/system/asterai.service
ETC_DIR=$ROOT/etc/asterai
STATE_DIR=$ROOT/var/lib/asterai
CACHE_DIR=$ROOT/var/cache/asterai
LOGS_DIR=$ROOT/var/log/asterai

if ((SYSTEM && !DRY_RUN && EUID != 0)); then
    die "run as root (with sudo), or try --dry-run or --prefix DIR"
fi

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }

run() {
    local shown="" arg
    for arg in "$@"; do
        # Quoted only where a shell would need it, so that the line can be pasted.
        if [[ $arg =~ ^[A-Za-z0-9_./:=+@%,-]+$ ]]; then shown+=" $arg"; else shown+=" $(printf '%q' "$arg")"; fi
    done
    if ((DRY_RUN)); then
        printf '    would run:%s\n' "$shown"
    else
        printf '    +%s\n' "$shown"
        "$@"
    fi
}

# remove PATH...: removes what exists (directories with their contents).
remove() {
    local path
    for path in "$@"; do
        # Belt and braces: never anything but asterai's own paths.
        [[ $path == */asterai || $path == */asterai.service ]] || die "refusing to remove $path"
        if [[ -e $path || -L $path ]]; then
            run rm -rf -- "$path"
        else
            note "absent: $path"
        fi
    done
}

((DRY_RUN)) && say "dry run: nothing will be changed"
((SYSTEM)) || say "uninstalling from under $ROOT (prefix mode: no users, no systemctl)"

say "service"
systemd_running=0
((SYSTEM)) && [[ -d /run/systemd/system ]] && systemd_running=1
if ((!SYSTEM)); then
    note "skipped (prefix mode)"
elif ((!systemd_running)); then
    note "systemd is not running here: nothing to stop"
elif systemctl cat asterai.service >/dev/null 2>&1; then
    # Stopping lets calls in flight finish (daemon.shutdown_grace), as `systemctl stop` does.
    run systemctl disable --now asterai.service
else
    note "absent: asterai.service"
fi

say "unit and binary"
remove "$UNIT" "$BIN"
((systemd_running)) && run systemctl daemon-reload

if ((PURGE)); then
    say "configuration, data, cache and logs (--purge)"
    remove "$ETC_DIR" "$STATE_DIR" "$CACHE_DIR" "$LOGS_DIR"
    if ((SYSTEM)); then
        say "user and group asterai (--purge)"
        if getent passwd asterai >/dev/null; then
            run userdel asterai
        else
            note "absent: user asterai"
        fi
        # userdel removes the group of the same name when no other user has it as primary group.
        if ! getent group asterai >/dev/null; then
            note "absent: group asterai"
        elif ((DRY_RUN)); then
            note "would run: groupdel asterai (unless userdel removes it)"
        else
            run groupdel asterai
        fi
    fi
else
    say "kept (remove them with --purge)"
    note "$ETC_DIR: the configuration and secrets"
    note "$STATE_DIR: the database, media and recordings"
    ((SYSTEM)) && note "the user and group asterai, which own them"
fi

if ((DRY_RUN)); then
    say "dry run: nothing was changed"
else
    say "asterai is uninstalled"
fi
if ((SYSTEM)); then
    note "Asterisk's dialplan may still send calls to AGI(agi://127.0.0.1:4573/...): remove or"
    note "reroute the asterai contexts in /etc/asterisk/extensions.conf."
fi
