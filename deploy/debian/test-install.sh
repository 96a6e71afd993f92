#!/usr/bin/env bash
# Install, upgrade, remove and purge the amd64 facegate package in throwaway roots, running the
# real maintainer scripts, and check what each step leaves behind.
#
#   deploy/debian/test-install.sh            (root; about 30 s; prints "N passed, N failed")
#
# The throwaway root: an overlay file system whose lower layer is this machine's own root
# (read-only) and whose upper layer is a tmpfs, mounted in a private mount namespace, and
# handed to `dpkg --root=DIR`. dpkg chroots into it for the maintainer scripts, which so find a
# real Debian userland (systemd-sysusers, adduser, userdel, the dpkg database) while every write
# lands in the tmpfs and vanishes with the namespace. The host is never touched. (An empty
# `dpkg --root` cannot run the scripts: there is no /bin/sh in it; a debootstrap chroot works
# too but costs minutes and a mirror.)
#
# Two roots:
#   A. systemd-sysusers present. Install (systemd not running: no systemctl call), edit the
#      conffile, add state and a key; upgrade to a higher version with "systemd running" (a
#      logging systemctl stub and /run/systemd/system); remove; purge.
#   B. no systemd-sysusers, no systemd-tmpfiles: the adduser fallback; install, then purge.
#   C. only with AARCH64_BIN set (and dpkg's arm64 foreign architecture with libc6:arm64, as
#      deploy/cross-aarch64.sh sets up): the arm64 package, install and purge; its binary
#      validates the installed config under qemu-aarch64-static (with an ARM /proc/cpuinfo,
#      docs/aarch64.md). Adds about 15 s plus the arm64 package build.
#
# Environment: DEB_COMPRESS (default gzip here, for speed), BIN and AARCH64_BIN (as
# deploy/package-deb.sh), EMU_TIMEOUT (seconds for the emulated validate, default 300).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

if [ "$(id -u)" -ne 0 ]; then
    echo "test-install: needs root (mount namespaces, overlayfs, dpkg --root)" >&2
    exit 1
fi
# Everything below runs in a private mount namespace: the mounts die with the process.
if [ -z "${FG_TEST_INSTALL_NS:-}" ]; then
    exec env FG_TEST_INSTALL_NS=1 unshare --mount --propagation private "$0" "$@"
fi

# Tools: systemd-analyze (package systemd) and file; installed from Debian when missing.
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v file >/dev/null || need+=(file)
if [ ${#need[@]} -gt 0 ]; then
    echo "test-install: installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi

START=$(date +%s.%N)
PASS=0
FAIL=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/facegate-test-install.XXXXXX")
cleanup() {
    # Lazy unmount of everything under WORK, deepest first, then the directory.
    findmnt -rn -o TARGET | grep "^$WORK" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '\n== %s\n' "$*"; }
ok() { PASS=$((PASS + 1)); printf '  ok    %s\n' "$1"; }
bad() { FAIL=$((FAIL + 1)); printf '  FAIL  %s\n' "$1"; }
# check DESCRIPTION COMMAND...: pass when COMMAND succeeds.
check() {
    local d=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$d"; else bad "$d"; printf '%s\n' "$out" | tail -5 | sed 's/^/        | /'; fi
}
# check_eq DESCRIPTION EXPECTED ACTUAL
check_eq() {
    if [ "$2" = "$3" ]; then ok "$1"; else bad "$1 (expected '$2', got '$3')"; fi
}

# --- two packages: V1, and V2 > V1 built from the same tree --------------------------------------
BASE=$(awk '/^\[/ { w = ($0 == "[workspace.package]"); next }
            w && /^version/ { gsub(/.*= *"|".*/, ""); print; exit }' Cargo.toml)
V1=$BASE-1
V2=$BASE-1+upgradetest1
export DEB_COMPRESS=${DEB_COMPRESS:-gzip}
log "building $V1 and $V2"
DEB1=$(DEB_VERSION=$V1 OUT_DIR=$WORK/debs deploy/package-deb.sh amd64)
DEB2=$(DEB_VERSION=$V2 OUT_DIR=$WORK/debs deploy/package-deb.sh amd64)
check "package versions order: $V2 > $V1" dpkg --compare-versions "$V2" gt "$V1"
DEB_ARM=
if [ -n "${AARCH64_BIN:-}" ]; then
    DEB_ARM=$(DEB_VERSION=$V1 OUT_DIR=$WORK/debs deploy/package-deb.sh arm64)
fi

# --- a throwaway root ------------------------------------------------------------------------------
M=
new_root() {
    local d=$WORK/$1
    mkdir -p "$d"
    mount -t tmpfs -o size=2G,mode=0755 tmpfs "$d"
    mkdir "$d/upper" "$d/work" "$d/root"
    mount -t overlay overlay -o "lowerdir=/,upperdir=$d/upper,workdir=$d/work" "$d/root"
    M=$d/root
    # Never run dpkg on anything but the overlay.
    [ "$(findmnt -n -o FSTYPE --mountpoint "$M")" = overlay ] || {
        echo "test-install: $M is not an overlay mount" >&2
        exit 1
    }
    mount --bind /dev "$M/dev"
    mount -t proc proc "$M/proc"
    # systemd is not running in here unless a test says so.
    rm -rf "$M/run/systemd/system"
    rm -rf "$M/var/lib/facegate" "$M/etc/facegate" "$M/etc/credstore.encrypted"
    # A systemctl that records its calls instead of talking to a systemd.
    rm -f "$M/usr/bin/systemctl"
    printf '#!/bin/sh\necho "$*" >>/var/log/systemctl.calls\n' >"$M/usr/bin/systemctl"
    chmod 0755 "$M/usr/bin/systemctl"
    rm -f "$M/var/log/systemctl.calls"
    touch "$M/var/log/systemctl.calls"
    if chroot "$M" getent passwd facegate >/dev/null; then
        echo "test-install: this machine already has a facegate user; cannot test user creation" >&2
        exit 1
    fi
}
in_root() { chroot "$M" "$@"; }
# How the installed binary is run: natively, or (scenario C) under qemu-user.
RUN=()
as_facegate() { chroot --userspec=facegate:facegate "$M" "$@"; }
mode_of() { chroot "$M" stat -c '%a %U:%G' "$1" 2>/dev/null || echo missing; }
status_of() { dpkg-query --admindir="$M/var/lib/dpkg" -W -f='${Status} ${Version}' facegate 2>/dev/null || echo "not-installed"; }
calls() { tr '\n' ';' <"$M/var/log/systemctl.calls"; }

check_installed() {
    local v=$1
    check_eq "dpkg status" "install ok installed $v" "$(status_of)"
    check_eq "/usr/bin/facegate" "755 root:root" "$(mode_of /usr/bin/facegate)"
    check_eq "ONNX Runtime in /usr/lib/facegate" "644 root:root" "$(mode_of /usr/lib/facegate/libonnxruntime.so.1.31.1)"
    check_eq "model manifest" "644 root:root" "$(mode_of /usr/share/facegate/models/manifest.toml)"
    for w in fr_detect fr_landmark fr_feature fr_liveness; do
        check "weights: $w.onnx" test -s "$M/usr/share/facegate/models/weights/$w.onnx"
    done
    check_eq "unit in /usr/lib/systemd/system" "644 root:root" "$(mode_of /usr/lib/systemd/system/facegate.service)"
    check "sysusers.d and tmpfiles.d files" test -f "$M/usr/lib/sysusers.d/facegate.conf" -a -f "$M/usr/lib/tmpfiles.d/facegate.conf"
    check "/etc/facegate/facegate.toml registered as a conffile" \
        sh -c "dpkg-query --admindir='$M/var/lib/dpkg' -W -f='\${Conffiles}' facegate | grep -q '^ /etc/facegate/facegate.toml '"
    local pw
    pw=$(in_root getent passwd facegate || true)
    check "system user facegate exists" test -n "$pw"
    local uid home shell
    IFS=: read -r _ _ uid _ _ home shell <<<"$pw"
    check "facegate is a system uid ($uid < 1000)" test "${uid:-9999}" -lt 1000
    check_eq "facegate home and shell" "/nonexistent /usr/sbin/nologin" "$home $shell"
    check "facegate is in group video" sh -c "chroot '$M' id -nG facegate | tr ' ' '\n' | grep -qx video"
    check "role groups facegate-admin, facegate-operator and facegate-events exist" \
        sh -c "chroot '$M' getent group facegate-admin && chroot '$M' getent group facegate-operator && chroot '$M' getent group facegate-events"
    check_eq "/var/lib/facegate" "700 facegate:facegate" "$(mode_of /var/lib/facegate)"
    check_eq "/etc/credstore.encrypted" "700 root:root" "$(mode_of /etc/credstore.encrypted)"
    # The installed binary finds ONNX Runtime and the models at their packaged paths.
    check "installed facegate validates the installed config as user facegate" \
        chroot --userspec=facegate:facegate "$M" "${RUN[@]}" /usr/bin/facegate validate --config /etc/facegate/facegate.toml
    check "installed unit loads cleanly (systemd-analyze verify; ExecStart binaries present)" \
        sh -c "out=\$(systemd-analyze verify --root='$M' facegate.service 2>&1); echo \"\$out\"; [ -z \"\$out\" ]"
    check "installed unit scores OK or better (systemd-analyze security --threshold=49)" \
        systemd-analyze security --offline=true --threshold=49 --root="$M" facegate.service
}

check_purged() {
    check_eq "dpkg status after purge" "not-installed" "$(status_of | sed 's/^unknown ok not-installed *$/not-installed/')"
    check "state directory /var/lib/facegate is gone" test ! -e "$M/var/lib/facegate"
    check "/etc/facegate is gone (conffile purged)" test ! -e "$M/etc/facegate"
    check "master key is gone" test ! -e "$M/etc/credstore.encrypted/facegate-master-key"
    check "user facegate is gone" sh -c "! chroot '$M' getent passwd facegate"
    check "groups facegate, facegate-admin, facegate-operator, facegate-events are gone" \
        sh -c "! chroot '$M' getent group facegate && ! chroot '$M' getent group facegate-admin && ! chroot '$M' getent group facegate-operator && ! chroot '$M' getent group facegate-events"
    check "binary, library, models, unit are gone" test ! -e "$M/usr/bin/facegate" -a \
        ! -e "$M/usr/lib/facegate" -a ! -e "$M/usr/share/facegate" -a ! -e "$M/usr/lib/systemd/system/facegate.service"
}

# ==================================================================================================
log "A: install $V1 (systemd-sysusers; systemd not running)"
new_root A
dpkg --root="$M" --install "$DEB1" >"$WORK/A-install.log" 2>&1 || { cat "$WORK/A-install.log"; bad "dpkg --install $V1"; }
check_installed "$V1"
check_eq "no systemctl call while systemd is not running" "" "$(calls)"

log "A: operate: local config edit, state, a key"
echo '# local change kept across upgrades' >>"$M/etc/facegate/facegate.toml"
as_facegate sh -c 'echo sealed >/var/lib/facegate/templates.sentinel'
printf 'not-a-real-key' >"$M/etc/credstore.encrypted/facegate-master-key"
chmod 0600 "$M/etc/credstore.encrypted/facegate-master-key"
UID1=$(in_root id -u facegate)

log "A: upgrade to $V2 (systemd running)"
mkdir -p "$M/run/systemd/system"
dpkg --root="$M" --install "$DEB2" >"$WORK/A-upgrade.log" 2>&1 || { cat "$WORK/A-upgrade.log"; bad "dpkg --install $V2"; }
check_installed "$V2"
check "conffile keeps the local edit" grep -qx '# local change kept across upgrades' "$M/etc/facegate/facegate.toml"
check "no .dpkg-dist / .dpkg-new / .dpkg-old left" sh -c "! ls '$M'/etc/facegate/*.dpkg-* 2>/dev/null"
check "state survives the upgrade" grep -qx sealed "$M/var/lib/facegate/templates.sentinel"
check "key survives the upgrade" test -s "$M/etc/credstore.encrypted/facegate-master-key"
check_eq "same uid after upgrade" "$UID1" "$(in_root id -u facegate)"
check_eq "upgrade: daemon-reload, then try-restart (no stop)" \
    "daemon-reload;try-restart facegate.service;" "$(calls)"

log "A: remove"
: >"$M/var/log/systemctl.calls"
dpkg --root="$M" --remove facegate >"$WORK/A-remove.log" 2>&1 || { cat "$WORK/A-remove.log"; bad "dpkg --remove"; }
check_eq "dpkg status after remove" "deinstall ok config-files $V2" "$(status_of)"
check_eq "remove: stop, then daemon-reload" "stop facegate.service;daemon-reload;" "$(calls)"
check "binary and unit gone after remove" test ! -e "$M/usr/bin/facegate" -a ! -e "$M/usr/lib/systemd/system/facegate.service"
check "conffile (with the local edit) kept after remove" grep -qx '# local change kept across upgrades' "$M/etc/facegate/facegate.toml"
check "state kept after remove" grep -qx sealed "$M/var/lib/facegate/templates.sentinel"
check "key kept after remove" test -s "$M/etc/credstore.encrypted/facegate-master-key"
check "user kept after remove" in_root getent passwd facegate
check "remove says purge destroys the data" grep -q "purge facegate' destroys" "$WORK/A-remove.log"

log "A: purge with a store: the 3-year processing record stays"
as_facegate sh -c 'echo records >/var/lib/facegate/facegate.db'
dpkg --root="$M" --purge facegate >"$WORK/A-purge.log" 2>&1 || { cat "$WORK/A-purge.log"; bad "dpkg --purge"; }
check_eq "dpkg status after purge" "not-installed" "$(status_of | sed 's/^unknown ok not-installed *$/not-installed/')"
check "purge keeps the store (Art. 9 record)" grep -qx records "$M/var/lib/facegate/facegate.db"
check "purge keeps the master key the record is verified with" test -s "$M/etc/credstore.encrypted/facegate-master-key"
check "purge says the record is kept and how to destroy it" grep -q "FACEGATE_PURGE_RECORDS=destroy" "$WORK/A-purge.log"
check "binary, library, models, unit are gone" test ! -e "$M/usr/bin/facegate" -a ! -e "$M/usr/lib/systemd/system/facegate.service"

# ==================================================================================================
log "B: install $V1 without systemd-sysusers/systemd-tmpfiles (adduser fallback)"
new_root B
rm -f "$M/usr/bin/systemd-sysusers" "$M/usr/bin/systemd-tmpfiles" "$M/bin/systemd-sysusers" "$M/bin/systemd-tmpfiles"
dpkg --root="$M" --install "$DEB1" >"$WORK/B-install.log" 2>&1 || { cat "$WORK/B-install.log"; bad "dpkg --install $V1"; }
check_installed "$V1"
as_facegate sh -c 'echo sealed >/var/lib/facegate/templates.sentinel'

log "B: purge an installed package in one step, destroying the records on purpose"
as_facegate sh -c 'echo records >/var/lib/facegate/facegate.db'
FACEGATE_PURGE_RECORDS=destroy dpkg --root="$M" --purge facegate >"$WORK/B-purge.log" 2>&1 || { cat "$WORK/B-purge.log"; bad "dpkg --purge"; }
check_purged
check "forced purge warns that templates and key are destroyed" grep -q "purging DESTROYS" "$WORK/B-purge.log"

# ==================================================================================================
if [ -n "$DEB_ARM" ]; then
    log "C: arm64 package: install $V1, validate under qemu-aarch64-static, purge"
    if ! dpkg --print-foreign-architectures | grep -qx arm64 ||
        ! dpkg-query -W -f='${Status}' libc6:arm64 2>/dev/null | grep -q "ok installed" ||
        ! command -v qemu-aarch64-static >/dev/null; then
        bad "scenario C needs dpkg's arm64 architecture, libc6:arm64 and qemu-user-static (deploy/cross-aarch64.sh setup)"
    else
        new_root C
        # ONNX Runtime identifies ARM cores from /proc/cpuinfo; qemu-user 7.2 shows the host's.
        n=$(nproc)
        for ((i = 0; i < n; i++)); do
            printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
            printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
        done >"$WORK/C/cpuinfo"
        mount --bind "$WORK/C/cpuinfo" "$M/proc/cpuinfo"
        RUN=(timeout "${EMU_TIMEOUT:-300}" env QEMU_CPU=cortex-a72 /usr/bin/qemu-aarch64-static)
        dpkg --root="$M" --install "$DEB_ARM" >"$WORK/C-install.log" 2>&1 || { cat "$WORK/C-install.log"; bad "dpkg --install arm64"; }
        check_eq "installed package is arm64" "arm64" "$(dpkg-query --admindir="$M/var/lib/dpkg" -W -f='${Architecture}' facegate 2>/dev/null)"
        check "installed binary and ONNX Runtime are aarch64" sh -c \
            "file -L '$M/usr/bin/facegate' '$M/usr/lib/facegate/libonnxruntime.so.1.31.1' | grep -c 'ARM aarch64' | grep -qx 2"
        check_installed "$V1"
        RUN=()
        dpkg --root="$M" --purge facegate >"$WORK/C-purge.log" 2>&1 || { cat "$WORK/C-purge.log"; bad "dpkg --purge arm64"; }
        check_purged
    fi
fi

END=$(date +%s.%N)
printf '\ntest-install: %s s\n' "$(awk -v a="$START" -v b="$END" 'BEGIN { printf "%.1f", b - a }')"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
