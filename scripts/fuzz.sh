#!/usr/bin/env bash
# Fuzz every parser of untrusted bytes with cargo-fuzz (libFuzzer), one target after another.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     default: 60 s each, every target in fuzz/fuzz_targets
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Each target starts
# from its committed seeds (fuzz/corpus/<target>) and minimised past crashes
# (fuzz/regressions/<target>); what it discovers goes to fuzz/scratch/<target> (not committed),
# crashing inputs to fuzz/artifacts/<target>/, the log to fuzz/logs/<target>.log.
# Prints one line per target: seconds, executions (libFuzzer's stat::number_of_executed_units),
# findings (crash, timeout, OOM and leak inputs written); exits 1 if any target found one.
#
# A finding: minimise it (cargo +nightly fuzz tmin -O -a -s none <target> <artifact>), fix it,
# and commit the minimised input to fuzz/regressions/<target>/ — the stable test suite replays
# it (see fieldlab_core::fuzzing). One that cannot be fixed yet goes to fuzz/known-crashes/.
#
# Environment: FUZZ_RSS_MB (default 2048), FUZZ_ARGS (extra libFuzzer flags), FUZZ_BUILD_JOBS
# (cargo -j, default 1: the fuzz build is a second full build of the workspace's crates).
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${1:-60}
shift || true
RSS_MB=${FUZZ_RSS_MB:-2048}
JOBS=${FUZZ_BUILD_JOBS:-1}
# -O release with -a debug assertions and overflow checks; no sanitizer: the code under test is
# safe Rust, and without ASan the same minutes run about twice the inputs.
FLAGS=(-O -a -s none)

if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(ls fuzz_targets | sed 's/\.rs$//' | sort)
fi

# Longest input worth trying, per target (libFuzzer's -max_len).
max_len() {
    case "$1" in
        bundle_verify|block_decode|wal_replay|backup_restore) echo 65536 ;;
        config_yaml|attest_policy) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

for t in "${TARGETS[@]}"; do
    CARGO_BUILD_JOBS=$JOBS cargo +nightly fuzz build "${FLAGS[@]}" "$t"
done

mkdir -p logs
failed=0
printf '%-16s %8s %12s %9s\n' target seconds executions findings
for t in "${TARGETS[@]}"; do
    mkdir -p "scratch/$t" "artifacts/$t" "corpus/$t"
    dirs=("scratch/$t" "corpus/$t")
    [ -d "regressions/$t" ] && dirs+=("regressions/$t")
    before=$(find "artifacts/$t" -type f | wc -l)
    CARGO_BUILD_JOBS=$JOBS cargo +nightly fuzz build "${FLAGS[@]}" "$t" 2>/dev/null
    start=$(date +%s)
    # One process, one job: libFuzzer's in-process mode (no -jobs/-workers fork).
    # shellcheck disable=SC2086
    if cargo +nightly fuzz run "${FLAGS[@]}" "$t" "${dirs[@]}" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb="$RSS_MB" -max_len="$(max_len "$t")" \
        -timeout=10 -print_final_stats=1 -artifact_prefix="artifacts/$t/" ${FUZZ_ARGS:-} \
        >"logs/$t.log" 2>&1; then
        status=ok
    else
        status=FAILED
    fi
    # libFuzzer's own count of seconds fuzzed (the wall clock includes a rebuild, if any).
    secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "logs/$t.log" | tail -1 | awk '{print $5}' || true)
    secs=${secs:-$(( $(date +%s) - start ))}
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | tail -1 | grep -o '[0-9]*$' || true)
    found=$(( $(find "artifacts/$t" -type f | wc -l) - before ))
    printf '%-16s %8s %12s %9s\n' "$t" "$secs" "${execs:-?}" "$found"
    if [ "$status" != ok ] || [ "$found" -gt 0 ]; then
        failed=1
        grep -E '^(==[0-9]+==|thread .* panicked|SUMMARY|.*(crash|timeout|oom|leak)-[0-9a-f]+)' "logs/$t.log" | head -5 | sed 's/^/    /' || true
    fi
done
exit "$failed"
