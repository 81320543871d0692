#!/usr/bin/env bash
# Installs asterai on Debian or Ubuntu: the asterai user and group, its directories, the binary,
# the systemd unit, the environment file and the config; then migrates the database and prints
# the next steps. Running it again is safe: it never overwrites the environment file or the
# config, and leaves alone whatever is already right.
#
#   sudo scripts/install.sh                        build with cargo, install under /
#   sudo scripts/install.sh --binary PATH          install a binary built elsewhere
#   scripts/install.sh --prefix DIR --binary PATH  everything under DIR: no users, no systemctl
#   scripts/install.sh --dry-run                   print each action, change nothing
#
# scripts/uninstall.sh removes what this installs.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/install.sh [--prefix DIR] [--binary PATH] [--dry-run] [--help]

Installs asterai (as root, e.g. with sudo, unless --prefix or --dry-run):
  /usr/local/bin/asterai                     the binary
  /etc/systemd/system/asterai.service        the systemd unit (Type=notify, sandboxed)
  /etc/asterai/asterai.env                   secrets and overrides, 0640 (never overwritten)
  /etc/asterai/asterai.toml                  the configuration, 0640 (never overwritten)
  /var/lib/asterai{,/media,/recordings}      state, and the directories shared with Asterisk
and the system user and group asterai (the asterisk user joins the group). Then it runs
`asterai migrate` as asterai and reloads systemd. It neither enables nor starts the service.

Options:
  --prefix DIR    Install everything under DIR as if it were / (DIR/usr/local/bin/asterai,
                  DIR/etc/asterai, DIR/var/lib/asterai, DIR/etc/systemd/system). Creates no
                  user, gives nothing to a user that does not exist, does not call systemctl;
                  the config's data_dir and the unit's paths point inside DIR.
  --binary PATH   Install this binary instead of building one (cargo build --release --locked).
  --dry-run       Print each action without doing it.
  -h, --help      This help.
EOF
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

PREFIX=""
BINARY=""
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
        --binary)
            (($# >= 2)) || die "--binary needs a path"
            BINARY=$2
            shift 2
            ;;
        --binary=*)
            BINARY=${1#--binary=}
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

SOURCE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for file in systemd/asterai.service systemd/asterai.env.example asterisk-config/asterai.toml; do
    [[ -f $SOURCE_DIR/$file ]] || die "cannot find $file in $SOURCE_DIR"
done

ROOT=""
if [[ -n $PREFIX ]]; then
    ROOT=$(realpath -m -- "$PREFIX")
    [[ $ROOT != / ]] || ROOT=""
    # The path is written into the unit and the TOML config as it is: plain characters only.
    if [[ $ROOT =~ [^A-Za-z0-9_./+@:-] ]]; then
        die "--prefix $PREFIX: use a path of letters, digits and _ . / + @ : -"
    fi
fi
BIN_DIR=$ROOT/usr/local/bin
ETC_DIR=$ROOT/etc/asterai
STATE_DIR=$ROOT/var/lib/asterai
UNIT_DIR=$ROOT/etc/systemd/system
BIN=$BIN_DIR/asterai
UNIT=$UNIT_DIR/asterai.service
ENV_FILE=$ETC_DIR/asterai.env
CONFIG=$ETC_DIR/asterai.toml
SYSTEM=1 # installing into the running system: users, owners, systemctl
[[ -z $ROOT ]] || SYSTEM=0

if ((SYSTEM && !DRY_RUN && EUID != 0)); then
    die "run as root (with sudo), or try --dry-run or --prefix DIR"
fi
if ((SYSTEM)) && [[ ! -f /etc/debian_version ]]; then
    echo "warning: this is not Debian or Ubuntu; continuing, but only they are tested" >&2
fi

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }

# Runs a command, or with --dry-run only says it would.
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

user_exists() { getent passwd "$1" >/dev/null; }
group_exists() { getent group "$1" >/dev/null; }

# set_owner PATH OWNER GROUP: chown when needed. Under a prefix, only as root and only to a user
# and group that exist.
set_owner() {
    local path=$1 owner=$2 group=$3 allowed=1
    user_exists "$owner" && group_exists "$group" || allowed=0
    ((SYSTEM || EUID == 0)) || allowed=0
    if ((!allowed)); then
        # In the running system only a dry run gets here (the user would have been created).
        if ((SYSTEM)); then
            run chown "$owner:$group" -- "$path"
        fi
        return 0
    fi
    if [[ ! -e $path ]] || [[ $(stat -c '%U:%G' -- "$path") != "$owner:$group" ]]; then
        run chown "$owner:$group" -- "$path"
    fi
}

# set_mode PATH MODE: chmod when needed.
set_mode() {
    local path=$1 mode=$2
    if [[ ! -e $path ]] || [[ $(stat -c '%a' -- "$path") != "${mode#0}" ]]; then
        run chmod "$mode" -- "$path"
    fi
}

# ensure_dir DIR MODE OWNER GROUP
ensure_dir() {
    local dir=$1 mode=$2 owner=$3 group=$4
    [[ -d $dir ]] || run mkdir -p -- "$dir"
    # Owner first: chown clears the setgid bit that the mode sets.
    set_owner "$dir" "$owner" "$group"
    set_mode "$dir" "$mode"
}

# install_file SRC DEST MODE OWNER GROUP: copies SRC over DEST when they differ, atomically.
install_file() {
    local src=$1 dest=$2 mode=$3 owner=$4 group=$5 tmp
    if [[ -f $dest ]] && cmp -s -- "$src" "$dest"; then
        note "unchanged: $dest"
    elif ((DRY_RUN)); then
        note "would install: $dest (mode $mode)"
        return 0
    else
        tmp=$(mktemp -- "$(dirname -- "$dest")/.$(basename -- "$dest").XXXXXX")
        cp -- "$src" "$tmp"
        chmod "$mode" -- "$tmp"
        mv -f -- "$tmp" "$dest"
        note "installed: $dest (mode $mode)"
    fi
    set_owner "$dest" "$owner" "$group"
    set_mode "$dest" "$mode"
}

# install_new SRC DEST MODE OWNER GROUP: copies SRC to DEST only if there is no DEST yet.
install_new() {
    local src=$1 dest=$2
    if [[ -e $dest ]]; then
        note "kept: $dest (it exists; never overwritten)"
        if [[ -f $dest ]] && (($(stat -c '%a' -- "$dest") % 10 != 0)); then
            echo "warning: every user can read $dest: chmod 0640 it" >&2
        fi
        return 0
    fi
    install_file "$@"
}

# Exports the VARIABLE=value lines of a systemd EnvironmentFile (comment lines start with # or ;,
# values may be quoted), as systemd passes them to the service.
load_env_file() {
    local line key value
    [[ -r $1 ]] || return 0
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line#"${line%%[![:space:]]*}"}
        [[ -z $line || $line == '#'* || $line == ';'* || $line != *=* ]] && continue
        key=${line%%=*}
        key=${key%"${key##*[![:space:]]}"}
        [[ $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
        value=${line#*=}
        value=${value#"${value%%[![:space:]]*}"}
        value=${value%"${value##*[![:space:]]}"}
        if ((${#value} >= 2)) && [[ ${value:0:1} == "${value: -1}" && ($value == \"* || $value == \'*) ]]; then
            value=${value:1:${#value}-2}
        fi
        export "$key=$value"
    done <"$1"
}

# Scratch files (the unit and the config as rendered for this install), never in the target.
WORK=$(mktemp -d)
trap 'rm -rf -- "$WORK"' EXIT

((DRY_RUN)) && say "dry run: nothing will be changed"
((SYSTEM)) || say "installing under $ROOT (prefix mode: no users, no systemctl)"

# 1. The binary to install.
if [[ -n $BINARY ]]; then
    [[ -f $BINARY && -x $BINARY ]] || die "--binary $BINARY: not an executable file"
    BINARY=$(realpath -- "$BINARY")
    say "binary: $BINARY"
else
    BINARY=$SOURCE_DIR/target/release/asterai
    say "building asterai"
    build=(cargo build --release --locked --manifest-path "$SOURCE_DIR/Cargo.toml")
    if [[ -n ${SUDO_USER:-} && $SUDO_USER != root && $EUID -eq 0 ]]; then
        # Under sudo, build as the user who owns the checkout and the Rust toolchain, so that
        # target/ does not fill up with files owned by root.
        user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        build=(runuser -u "$SUDO_USER" -- env "PATH=$user_home/.cargo/bin:$PATH" "HOME=$user_home" "${build[@]}")
    elif ! command -v cargo >/dev/null; then
        die "cargo not found: install Rust (see README.md), or build first and pass --binary"
    fi
    run "${build[@]}"
    ((DRY_RUN)) || [[ -x $BINARY ]] || die "the build did not produce $BINARY"
fi

# 2. The user and group. Asterisk joins the group to share media and recordings.
say "user and group asterai"
if ((SYSTEM)); then
    if group_exists asterai; then
        note "exists: group asterai"
    else
        run groupadd --system asterai
    fi
    if user_exists asterai; then
        note "exists: user asterai"
    else
        run useradd --system --gid asterai --home-dir /var/lib/asterai --no-create-home \
            --shell /usr/sbin/nologin --comment "asterai voice agent" asterai
    fi
    if ! user_exists asterisk; then
        note "no asterisk user yet: once Asterisk is installed, run: sudo usermod -a -G asterai asterisk"
    elif id -nG asterisk | tr ' ' '\n' | grep -qx asterai; then
        note "exists: asterisk in group asterai"
    else
        run usermod -a -G asterai asterisk
        note "restart Asterisk so that it runs with its new group"
    fi
else
    note "skipped (prefix mode)"
fi

# 3. Directories. The state directory is 0750 so that Asterisk (group asterai) can reach media/
# and recordings/; those two are group-writable and setgid, so every file keeps the group.
say "directories"
ensure_dir "$ETC_DIR" 0750 root asterai
ensure_dir "$STATE_DIR" 0750 asterai asterai
ensure_dir "$STATE_DIR/media" 2770 asterai asterai
ensure_dir "$STATE_DIR/recordings" 2770 asterai asterai
[[ -d $BIN_DIR ]] || run mkdir -p -- "$BIN_DIR"
[[ -d $UNIT_DIR ]] || run mkdir -p -- "$UNIT_DIR"

# 4. The binary.
say "binary"
if [[ -e $BINARY ]]; then
    install_file "$BINARY" "$BIN" 0755 root root
else
    note "would install: $BINARY -> $BIN (mode 0755)"
fi

# 5. The unit. Under a prefix its paths point inside the prefix.
say "systemd unit"
unit_src=$SOURCE_DIR/systemd/asterai.service
if ((!SYSTEM)); then
    sed -e "s|^ExecStart=/usr/local/bin/asterai |ExecStart=$BIN |" \
        -e "s|^EnvironmentFile=-/etc/asterai/asterai.env\$|EnvironmentFile=-$ENV_FILE|" \
        -e "s|^Environment=ASTERAI_CONFIG=/etc/asterai/asterai.toml\$|Environment=ASTERAI_CONFIG=$CONFIG|" \
        -e "s|^#ReadWritePaths=.*|&\nReadWritePaths=$STATE_DIR|" \
        -- "$unit_src" >"$WORK/asterai.service"
    unit_src=$WORK/asterai.service
fi
install_file "$unit_src" "$UNIT" 0644 root root

# 6. The environment file and the config: installed once, never overwritten. The config names
# the data directory (the unit's StateDirectory=), so that commands run by hand, such as
# `asterai doctor` or `asterai org create`, use the service's database.
say "environment file and config"
install_new "$SOURCE_DIR/systemd/asterai.env.example" "$ENV_FILE" 0640 root asterai
sed -e "s|^data_dir = \"\"|data_dir = \"$STATE_DIR\"|" -- "$SOURCE_DIR/asterisk-config/asterai.toml" >"$WORK/asterai.toml"
grep -q "^data_dir = \"$STATE_DIR\"" -- "$WORK/asterai.toml" ||
    die "asterisk-config/asterai.toml has no 'data_dir = \"\"' line to fill in"
install_new "$WORK/asterai.toml" "$CONFIG" 0640 root asterai

# 7. The database: `asterai migrate` with the environment the service will have.
say "database migrations"
if ((DRY_RUN)); then
    if ((SYSTEM)); then
        note "would run: runuser -u asterai -- $BIN migrate (ASTERAI_CONFIG=$CONFIG, and $ENV_FILE)"
    else
        note "would run: $BIN migrate (ASTERAI_CONFIG=$CONFIG, and $ENV_FILE)"
    fi
else
    (
        # What the service sees, and nothing from this shell: no stray ASTERAI_* or RUST_LOG.
        while IFS= read -r name; do
            unset "$name"
        done < <(compgen -e | grep -E '^(ASTERAI_.*|RUST_LOG|STATE_DIRECTORY)$' || true)
        load_env_file "$ENV_FILE"
        export ASTERAI_CONFIG=$CONFIG
        # The service's UMask=: the database is not for other users.
        umask 0007
        cd /
        if ((SYSTEM)); then
            export STATE_DIRECTORY=$STATE_DIR
            printf '    + runuser -u asterai -- %s migrate\n' "$BIN"
            exec runuser -u asterai -- "$BIN" migrate
        else
            printf '    + %s migrate\n' "$BIN"
            exec "$BIN" migrate
        fi
    ) || die "asterai migrate failed: check $ENV_FILE and $CONFIG (asterai doctor tells more)"
fi

# 8. systemd.
say "systemd"
if ((!SYSTEM)); then
    note "skipped (prefix mode)"
elif [[ -d /run/systemd/system ]]; then
    run systemctl daemon-reload
    if systemctl is-active --quiet asterai.service; then
        note "asterai is running the previous binary: sudo systemctl restart asterai"
    fi
else
    note "systemd is not running here: no daemon-reload"
fi

if ! command -v espeak-ng >/dev/null; then
    echo "warning: espeak-ng, the default voice, is missing: sudo apt-get install -y espeak-ng" >&2
fi

if ((SYSTEM)); then
    as_asterai="sudo -u asterai sh -c 'set -a; . $ENV_FILE; exec asterai"
    start="sudo systemctl enable --now asterai"
else
    as_asterai="sh -c 'set -a; . $ENV_FILE; ASTERAI_CONFIG=$CONFIG exec $BIN"
    start="$UNIT (its paths point into $ROOT) to /etc/systemd/system, then systemctl enable --now asterai"
fi
dry_note=""
((DRY_RUN)) && dry_note=" (dry run: nothing was changed)"
cat <<EOF

asterai is installed$dry_note. Next steps:

  1. Secrets and overrides (API keys, PostgreSQL URL, ARI password): edit $ENV_FILE
     Settings: $CONFIG (every key is documented there).
  2. Start it now and at every boot, and follow its log:
       $start
       journalctl -u asterai -f
  3. Asterisk: adapt the samples in $SOURCE_DIR/asterisk-config/ and copy them to /etc/asterisk/
       extensions.conf      contexts asterai-inbound, asterai-outbound, asterai-transfer and
                            asterai-health (org= and the transfer targets are marked ADAPT)
       http.conf, ari.conf  ARI on 127.0.0.1:8088 for the user asterai (dialer, transfers)
       pjsip.conf           a SIP trunk named "trunk" (the dialer's PJSIP/{number}@trunk)
     then: sudo asterisk -rx "core reload"
  4. Check the whole installation (config, database, ports, ARI, media, providers):
       $as_asterai doctor'
  5. Create the organization that the dialplan's org= names:
       $as_asterai org create acme --name Acme'
EOF
