#!/usr/bin/env bash
# Build the facegate Debian package with plain dpkg-deb (no cargo-deb: nothing to install, and
# the layout below is all a .deb needs).
#
#   deploy/package-deb.sh [amd64|arm64]        (default: amd64)
#
# Output: $OUT_DIR/facegate_<version>_<arch>.deb (default OUT_DIR=target/debian).
#
# Contents:
#   /usr/bin/facegate                                 the binary (stripped as Debian policy says)
#   /usr/lib/facegate/libonnxruntime.so.1.31.1        ONNX Runtime for the package's architecture
#   /usr/share/facegate/models/                       manifest.toml, weights/, samples/
#   /etc/facegate/facegate.toml                       the default config (a conffile)
#   /usr/lib/systemd/system/facegate.service          the unit (deploy/systemd/)
#   /usr/lib/sysusers.d/facegate.conf, /usr/lib/tmpfiles.d/facegate.conf
#   /usr/share/doc/facegate/                          packaging.md, README.md, copyright, changelog
#   maintainer scripts from deploy/debian/ (postinst, prerm, postrm)
#
# Environment:
#   BIN          amd64 binary (default: $CARGO_TARGET_DIR/release/facegate, built with
#                `cargo build --release --locked -p facegate` when missing)
#   AARCH64_BIN  arm64 binary, required for arm64 (deploy/cross-aarch64.sh build makes
#                target/aarch64-unknown-linux-gnu/release/facegate); exit 2 when absent
#   DEB_VERSION  the package version (default: the workspace version from Cargo.toml, "-1");
#                the install test builds a second, higher one to test upgrades
#   DEB_COMPRESS dpkg-deb compressor: xz (default), gzip, zstd, none
#   OUT_DIR      where the .deb goes (default: target/debian)
#
# Every asset is checked against the SHA-256 in models/manifest.toml before it is packed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ARCH=${1:-amd64}
case "$ARCH" in
    amd64) ORT_ARCH=x86_64 ;;
    arm64) ORT_ARCH=aarch64 ;;
    *) echo "usage: $0 [amd64|arm64]" >&2; exit 64 ;;
esac

die() { printf 'package-deb: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

# --- version: [workspace.package] version in Cargo.toml ----------------------------------------
CARGO_VERSION=$(awk '
    /^\[/ { in_ws = ($0 == "[workspace.package]") ; next }
    in_ws && /^version[[:space:]]*=/ { gsub(/.*=[[:space:]]*"|".*/, ""); print; exit }
' Cargo.toml)
[ -n "$CARGO_VERSION" ] || die "no [workspace.package] version in Cargo.toml"
VERSION=${DEB_VERSION:-$CARGO_VERSION-1}

# --- the binary ---------------------------------------------------------------------------------
if [ "$ARCH" = arm64 ]; then
    if [ -z "${AARCH64_BIN:-}" ] || [ ! -f "${AARCH64_BIN}" ]; then
        echo "package-deb: arm64 needs AARCH64_BIN=<path of the aarch64 facegate binary>;" \
             "build it with deploy/cross-aarch64.sh build" \
             "(target/aarch64-unknown-linux-gnu/release/facegate)" >&2
        exit 2
    fi
    SRC_BIN=$AARCH64_BIN
    STRIP=aarch64-linux-gnu-strip
    MACHINE="ARM aarch64"
else
    SRC_BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/facegate}
    if [ ! -x "$SRC_BIN" ]; then
        log "no binary at $SRC_BIN: cargo build --release --locked -p facegate"
        nice -n 10 cargo build --release --locked -p facegate
    fi
    STRIP=strip
    MACHINE="x86-64"
fi
[ -f "$SRC_BIN" ] || die "no binary at $SRC_BIN"
if command -v file >/dev/null 2>&1; then
    file -b "$SRC_BIN" | grep -q "$MACHINE" || die "$SRC_BIN is not an $MACHINE ELF: $(file -b "$SRC_BIN")"
fi

# --- the assets, checked against the manifest -----------------------------------------------------
MODELS=$ROOT/models
ORT=$MODELS/runtime/$ORT_ARCH/libonnxruntime.so.1.31.1
if [ ! -f "$ORT" ] || [ ! -f "$MODELS/weights/fr_detect.onnx" ]; then
    log "fetching runtime assets for $ORT_ARCH"
    python3 deploy/fetch-assets.py --arch "$ORT_ARCH"
fi
# `dest sha256` for every [[runtime]] of this arch and every [[model]] / [[sample]] in the manifest.
ASSETS=$(awk -v arch="$ORT_ARCH" '
    function flush() { if (dest != "" && sum != "" && (kind != "runtime" || a == arch)) print dest, sum }
    /^\[\[/ { flush(); kind = $0; gsub(/[\[\]]/, "", kind); dest = sum = a = ""; next }
    /^dest[[:space:]]*=/   { dest = $0; gsub(/.*=[[:space:]]*"|".*/, "", dest) }
    /^sha256[[:space:]]*=/ { sum = $0;  gsub(/.*=[[:space:]]*"|".*/, "", sum) }
    /^arch[[:space:]]*=/   { a = $0;    gsub(/.*=[[:space:]]*"|".*/, "", a) }
    END { flush() }
' "$MODELS/manifest.toml")
[ -n "$ASSETS" ] || die "no assets found in $MODELS/manifest.toml"
while read -r dest sum; do
    [ -f "$MODELS/$dest" ] || die "missing $MODELS/$dest (run python3 deploy/fetch-assets.py --arch $ORT_ARCH)"
    echo "$sum  $MODELS/$dest"
done <<<"$ASSETS" | sha256sum --check --quiet - || die "an asset does not match models/manifest.toml"

# --- the tree -----------------------------------------------------------------------------------
OUT_DIR=${OUT_DIR:-$ROOT/target/debian}
mkdir -p "$OUT_DIR"
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/facegate-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
P=$STAGE/pkg
umask 022
install -d "$P/DEBIAN" "$P/usr/bin" "$P/usr/lib/facegate" "$P/usr/share/facegate/models" \
    "$P/etc/facegate" "$P/usr/lib/systemd/system" "$P/usr/lib/sysusers.d" "$P/usr/lib/tmpfiles.d" \
    "$P/usr/share/doc/facegate"

install -m 0755 "$SRC_BIN" "$P/usr/bin/facegate"
if command -v "$STRIP" >/dev/null 2>&1; then
    # As Debian policy strips (10 MB instead of 60).
    "$STRIP" --strip-unneeded --remove-section=.comment --remove-section=.note "$P/usr/bin/facegate"
else
    log "no $STRIP: the binary keeps its debug info"
fi
install -m 0644 "$ORT" "$P/usr/lib/facegate/libonnxruntime.so.1.31.1"
install -m 0644 "$MODELS/manifest.toml" "$P/usr/share/facegate/models/manifest.toml"
while read -r dest _; do
    case "$dest" in runtime/*) continue ;; esac # ONNX Runtime goes to /usr/lib/facegate
    install -D -m 0644 "$MODELS/$dest" "$P/usr/share/facegate/models/$dest"
done <<<"$ASSETS"
install -m 0644 configs/facegate.toml "$P/etc/facegate/facegate.toml"
install -m 0644 deploy/systemd/facegate.service "$P/usr/lib/systemd/system/facegate.service"
install -m 0644 deploy/systemd/facegate.sysusers "$P/usr/lib/sysusers.d/facegate.conf"
install -m 0644 deploy/systemd/facegate.tmpfiles "$P/usr/lib/tmpfiles.d/facegate.conf"
install -m 0644 docs/packaging.md README.md "$P/usr/share/doc/facegate/"
cat >"$P/usr/share/doc/facegate/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: facegate

Files: usr/bin/facegate usr/lib/systemd/* usr/lib/sysusers.d/* usr/lib/tmpfiles.d/* etc/facegate/*
Copyright: 2026 the facegate contributors
License: Apache-2.0

Files: usr/lib/facegate/libonnxruntime.so.*
Copyright: Copyright (c) Microsoft Corporation
License: MIT

Files: usr/share/facegate/models/*
Copyright: see each model's source package
License: see usr/share/facegate/models/manifest.toml
Comment: Each model's source package, version and licence are recorded in
 usr/share/facegate/models/manifest.toml.
EOF
CHANGED=$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
printf 'facegate (%s) unstable; urgency=medium\n\n  * Built from the facegate workspace at %s.\n\n -- facegate maintainers <facegate@example.invalid>  %s\n' \
    "$VERSION" "$COMMIT" "$CHANGED" | gzip -9n >"$P/usr/share/doc/facegate/changelog.Debian.gz"
chmod 0644 "$P/usr/share/doc/facegate/changelog.Debian.gz"
for s in postinst prerm postrm; do
    install -m 0755 "deploy/debian/$s" "$P/DEBIAN/$s"
done
echo /etc/facegate/facegate.toml >"$P/DEBIAN/conffiles"

INSTALLED_KB=$(du -sk --exclude=DEBIAN "$P" | cut -f1)
cat >"$P/DEBIAN/control" <<EOF
Package: facegate
Version: $VERSION
Architecture: $ARCH
Maintainer: facegate maintainers <facegate@example.invalid>
Section: misc
Priority: optional
Installed-Size: $INSTALLED_KB
Depends: libc6 (>= 2.34), libgcc-s1, libstdc++6 (>= 6), adduser, passwd
Recommends: systemd (>= 250)
Homepage: https://example.invalid/facegate
Description: on-device face recognition for gate terminals
 facegate watches a camera, recognises enrolled people on the device itself
 (ONNX Runtime, no network), and opens a gate through GPIO. Templates are
 sealed with AES-256-GCM under a key held as a systemd credential; consent,
 retention and a tamper-evident audit log follow China's facial recognition
 Measures. Ships the service unit, the models and ONNX Runtime.
EOF
(cd "$P" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
    >"$P/DEBIAN/md5sums"

DEB=$OUT_DIR/facegate_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$P" "$DEB" >/dev/null
log "built $DEB ($(du -h "$DEB" | cut -f1))"
echo "$DEB"
