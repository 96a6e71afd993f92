#!/usr/bin/env bash
# Fuzzes facegate's parsers with cargo-fuzz (libFuzzer):
#
#   deploy/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Targets (fuzz/fuzz_targets/): y4m, image_decode, admin_protocol, manifest, config; default all,
# 600 s each. Each target starts from its committed seeds (fuzz/seeds/TARGET) and keeps its
# growing corpus in fuzz/corpus/TARGET; crashing inputs go to fuzz/artifacts/TARGET/, the log of
# each run to fuzz/artifacts/TARGET.log, and one summary line per target is printed at the end.
# Runs at nice 19, one target at a time, in libFuzzer's fork mode (a crash is saved and the run
# goes on).
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). With a nightly toolchain it is used (address
# sanitizer); with only stable, RUSTC_BOOTSTRAP=1 lets stable rustc take the -Z flags.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(y4m image_decode admin_protocol manifest config)

command -v cargo-fuzz >/dev/null || { echo "fuzz.sh: cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 1; }
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
triple="$(rustc -vV | sed -n 's/^host: //p')"
for t in "${targets[@]}"; do
    (cd fuzz && nice -n 19 "${fuzz[@]}" build -O "$t")
done
bin="fuzz/target/$triple/release"
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log="fuzz/artifacts/$t.log"
    start=$(date +%s)
    # The config target resolves a relative manifest search from the working directory.
    nice -n 19 "$bin/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" \
        -max_total_time="$secs" -fork=1 -ignore_crashes=1 -rss_limit_mb=2048 -timeout=10 \
        -max_len=65536 -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || true
    took=$(( $(date +%s) - start ))
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")
    crashes=$(find "fuzz/artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \) | wc -l)
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    summary+=("$t: ${took}s, ${execs:-?} executions, corpus $corpus files, $crashes crash/oom/timeout artifact(s)")
done
printf '%s\n' "${summary[@]}"
