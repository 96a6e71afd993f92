#!/usr/bin/env bash
# Cross-build facegate for aarch64 (arm64 gate terminals) on an x86_64 Debian 12 machine and
# smoke-test the aarch64 binary under qemu-user. Idempotent; needs only Debian's packages and the
# registries deploy/fetch-assets.py uses (PyPI for the aarch64 ONNX Runtime wheel).
#
#   deploy/cross-aarch64.sh setup   install what is missing (apt), fetch the aarch64 ONNX Runtime
#   deploy/cross-aarch64.sh build   setup + cross-build the workspace (libraries, benches harness,
#                                   target/aarch64-unknown-linux-gnu/release/facegate)
#   deploy/cross-aarch64.sh smoke   build + run the aarch64 binary under qemu-aarch64 (detect and
#                                   compare on real images) and check its decisions against the
#                                   x86 build's (target/release/facegate)
#
# Toolchain: Debian's rustc-web/cargo-web (1.96) with libstd-rust-web-dev:arm64, so no rustup
# target is needed; /usr/bin/cargo and /usr/bin/rustc are called explicitly because a rustup
# toolchain earlier in PATH has no aarch64 std. Linker: aarch64-linux-gnu-gcc (.cargo/config.toml).
#
# Emulation, two traps this script avoids (docs/aarch64.md has the evidence):
#  1. Mixed glibc. `qemu-aarch64 -L /usr/aarch64-linux-gnu` takes ld.so from the cross sysroot
#     (libc6-arm64-cross) but that ld.so reads the host's /etc/ld.so.cache, which points at the
#     multiarch libc6:arm64 (a different build). Their private _rtld_global layouts differ, and the
#     first pthread_create (ONNX Runtime's CreateEnv) loops for ever walking the stack cache.
#     So qemu runs here WITHOUT -L: ld.so, libc, libstdc++ all come from the multiarch arm64
#     packages (libc6:arm64, libstdc++6:arm64) in /lib/aarch64-linux-gnu.
#  2. /proc/cpuinfo. qemu-user 7.2 (bookworm) shows the guest the host's x86 /proc/cpuinfo;
#     ONNX Runtime's cpuinfo library finds no ARM processor in it and dereferences NULL while
#     the library is being loaded. The smoke step bind-mounts an ARM /proc/cpuinfo (Cortex-A72)
#     in a private mount namespace (unshare -m; root or CAP_SYS_ADMIN). Newer qemu-user
#     (qemu 10 tried) emulates /proc/cpuinfo itself; the bind mount is harmless there.
#
# Environment: CARGO_TARGET_DIR (default target), X86_BIN (the x86 reference, default
# $CARGO_TARGET_DIR/release/facegate, built when missing), QEMU_CPU (default cortex-a72),
# SMOKE_TIMEOUT (seconds per emulated command, default 900).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TARGET=aarch64-unknown-linux-gnu
TDIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TDIR/$TARGET/release/facegate
X86_BIN=${X86_BIN:-$TDIR/release/facegate}
QEMU=qemu-aarch64-static
export QEMU_CPU=${QEMU_CPU:-cortex-a72}
SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-900}

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'cross-aarch64: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

setup() {
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        log "adding the arm64 architecture to dpkg"
        as_root dpkg --add-architecture arm64
        as_root apt-get update -qq
    fi
    local need=()
    # rustc-web/cargo-web + libstd-rust-web-dev:arm64: Rust 1.96 with the aarch64 std.
    # gcc-aarch64-linux-gnu + libc6-dev-arm64-cross: linker, C compiler for the -sys crates
    #   (bundled SQLite, mozjpeg, ring) and the kernel headers for nokhwa's V4L2 bindings.
    # libclang-dev: bindgen. qemu-user-static: the emulator.
    # libstdc++6:arm64 (pulls libc6:arm64, libgcc-s1:arm64): the runtime the emulated binary and
    #   libonnxruntime.so load, one consistent glibc (see trap 1 above).
    # ffmpeg: makes the altered copy of the sample portrait; python3-pip: fetch-assets.py.
    for p in rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu \
        libc6-dev-arm64-cross libclang-dev pkg-config qemu-user-static libstdc++6:arm64 \
        ffmpeg python3-pip ca-certificates; do
        installed "$p" || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        log "installing Debian packages: ${need[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
            "${need[@]}" >/dev/null
    fi
    # The host's runtime too: the smoke step runs the x86 build as the reference.
    log "fetching the aarch64 and $(uname -m) ONNX Runtime, models and samples (checked against models/manifest.toml)"
    python3 deploy/fetch-assets.py --arch aarch64 --arch "$(uname -m)"
}

build() {
    log "cross-building the workspace for $TARGET (release) with $(/usr/bin/rustc --version)"
    # bindgen (v4l2-sys-mit) must parse the aarch64 headers, not the host's.
    RUSTC=/usr/bin/rustc \
        BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--target=aarch64-linux-gnu -I/usr/aarch64-linux-gnu/include" \
        PKG_CONFIG_ALLOW_CROSS=1 \
        CARGO_TARGET_DIR="$TDIR" \
        /usr/bin/cargo build --release --locked --target "$TARGET" --workspace
    file "$BIN" | grep -q "ARM aarch64" || die "$BIN is not an aarch64 executable"
    log "built $BIN ($(du -h "$BIN" | cut -f1))"
}

# A /proc/cpuinfo as an arm64 Linux kernel prints it, one entry per host CPU (Cortex-A72).
fake_cpuinfo() {
    local n i
    n=$(nproc)
    for ((i = 0; i < n; i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
    done
}

# Runs the aarch64 binary under qemu-user: `emu [--plain] ARGS...`. Output on stdout.
EMU_NS=1
emu() {
    local plain=0
    if [ "$1" = --plain ]; then plain=1; shift; fi
    if [ $plain -eq 0 ] && [ $EMU_NS -eq 1 ]; then
        FG_CPUINFO=$WORK/cpuinfo timeout "$SMOKE_TIMEOUT" unshare -m sh -c \
            'mount --bind "$FG_CPUINFO" /proc/cpuinfo && exec "$@"' sh "$QEMU" "$BIN" "$@"
    else
        timeout "$SMOKE_TIMEOUT" "$QEMU" "$BIN" "$@"
    fi
}

# Prints the decisions of a detect/compare JSON answer (file $1) on one line: the number of faces
# and each face's quality verdict, or the 1:1 verdict.
summary() {
    python3 - "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
if isinstance(d, list):
    print(" ".join(
        "%dface(s)%s" % (len(i["faces"]), "".join("[quality_ok=%s]" % f["quality_ok"] for f in i["faces"]))
        for i in d))
else:
    print("same_person=%s" % d["same_person"])
EOF
}

# Prints the largest difference between two JSON answers' numbers (boxes, scores, similarity).
maxdiff() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
def nums(v, path=""):
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return {}
    if isinstance(v, (int, float)):
        return {path: float(v)}
    out = {}
    items = v.items() if isinstance(v, dict) else enumerate(v)
    for k, x in items:
        out.update(nums(x, f"{path}/{k}"))
    return out
a, b = (nums(json.load(open(p))) for p in sys.argv[1:3])
worst = max(((abs(a[k] - b[k]), k) for k in a if k in b), default=(0.0, "-"))
print(f"{worst[0]:.3g} at {worst[1]}")
EOF
}

smoke() {
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    ulimit -c 0 # a crashing guest must not leave qemu_facegate_*.core files in the tree
    local lib=$ROOT/models/runtime/aarch64/libonnxruntime.so.1.31.1
    [ -f "$lib" ] || die "missing $lib (run: deploy/cross-aarch64.sh setup)"
    export ORT_DYLIB_PATH=$lib # for the emulated binary only (the x86 one runs with it unset)
    log "emulator: $($QEMU --version | head -1), QEMU_CPU=$QEMU_CPU"

    log "non-ONNX commands under qemu-aarch64"
    emu --plain --version
    emu --plain --help >/dev/null
    echo "facegate --help: ok"

    if [ ! -x "$X86_BIN" ]; then
        log "building the x86 reference (cargo build --release)"
        CARGO_TARGET_DIR="$TDIR" cargo build --release --locked -p facegate --bin facegate
        [ -x "$X86_BIN" ] || die "no x86 reference at $X86_BIN"
    fi
    local sample=$ROOT/models/samples/astronaut.png other=$ROOT/models/samples/camera.png
    local altered=$WORK/astronaut-altered.png
    # The altered copy: mirrored, brighter, more contrast (a different pixel grid, same person).
    ffmpeg -loglevel error -y -i "$sample" -vf "hflip,eq=brightness=0.05:contrast=1.1" "$altered"

    fake_cpuinfo >"$WORK/cpuinfo"
    if ! unshare -m sh -c "mount --bind '$WORK/cpuinfo' /proc/cpuinfo" 2>/dev/null; then
        EMU_NS=0
        log "WARNING: cannot bind-mount an ARM /proc/cpuinfo (unshare -m needs root or CAP_SYS_ADMIN);"
        log "         under qemu-user 7.2 ONNX Runtime then crashes in its CPU probe (see docs/aarch64.md)"
    fi

    # ONNX Runtime's load + CreateEnv alone: a crash or a hang here means inference cannot run
    # under this emulator; then say why and stop after the non-ONNX checks.
    log "probing ONNX Runtime under emulation (facegate validate)"
    local t0 t1 rc=0
    t0=$(date +%s)
    emu validate >"$WORK/validate.out" 2>&1 || rc=$?
    t1=$(date +%s)
    if [ $rc -ne 0 ]; then
        cat "$WORK/validate.out" >&2
        case $rc in
            124) why="it did not finish in ${SMOKE_TIMEOUT}s (hang; mixed glibc? see docs/aarch64.md)" ;;
            139 | 134) why="it crashed with signal $((rc - 128)) (ONNX Runtime's CPU probe; see docs/aarch64.md)" ;;
            *) why="facegate validate exited with $rc" ;;
        esac
        die "inference NOT run under emulation: $why. The aarch64 binary itself runs (--version, --help above)."
    fi
    cat "$WORK/validate.out"
    echo "validate (ONNX Runtime load, 4 sessions): $((t1 - t0)) s"

    local fail=0 name
    run_case() { # name, then facegate arguments
        local name=$1 x a ta tb
        shift
        ta=$(date +%s.%N)
        env -u ORT_DYLIB_PATH "$X86_BIN" "$@" --json >"$WORK/$name.x86.json"
        tb=$(date +%s.%N)
        x=$(summary "$WORK/$name.x86.json")
        printf '%-26s x86     %-28s %6.1f s\n' "$name" "$x" "$(elapsed "$ta" "$tb")"
        ta=$(date +%s.%N)
        emu "$@" --json >"$WORK/$name.arm.json"
        tb=$(date +%s.%N)
        a=$(summary "$WORK/$name.arm.json")
        printf '%-26s aarch64 %-28s %6.1f s (emulated)   max |x86-aarch64| %s\n' "$name" "$a" \
            "$(elapsed "$ta" "$tb")" "$(maxdiff "$WORK/$name.x86.json" "$WORK/$name.arm.json")"
        if [ "$x" != "$a" ]; then
            echo "MISMATCH in $name: x86 [$x] vs aarch64 [$a]" >&2
            fail=1
        fi
    }
    log "detect and compare: x86 build vs aarch64 build under qemu-aarch64"
    run_case detect-astronaut detect "$sample"
    run_case compare-altered compare "$sample" "$altered"
    run_case compare-cameraman compare "$sample" "$other"
    [ $fail -eq 0 ] || die "the aarch64 decisions differ from the x86 ones"
    log "aarch64 smoke test passed: same decisions as x86"
}

case "${1:-}" in
    setup) setup ;;
    build) setup; build ;;
    smoke) setup; build; smoke ;;
    run)
        # The built aarch64 binary under emulation, as the smoke step runs it (benches/compare
        # uses this): deploy/cross-aarch64.sh run ARGS...
        shift
        [ -x "$BIN" ] || die "$BIN is missing: deploy/cross-aarch64.sh build"
        WORK=$(mktemp -d)
        trap 'rm -rf "$WORK"' EXIT
        fake_cpuinfo >"$WORK/cpuinfo"
        unshare -m sh -c "mount --bind '$WORK/cpuinfo' /proc/cpuinfo" 2>/dev/null || EMU_NS=0
        emu "$@"
        ;;
    *)
        echo "usage: deploy/cross-aarch64.sh setup|build|smoke|run ARGS..." >&2
        exit 2
        ;;
esac
