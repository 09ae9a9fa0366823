#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of every parser that takes guest, client
# or host input. Targets: Fuzz/Sources/HostVMMFuzz; seeds: Fuzz/corpus
# (written by Fuzz/make_seeds.py).
#
# Two builds: the fuzzing runs without AddressSanitizer (3-5x the executions:
# Swift code is bounds- and overflow-checked without it), then every input the
# run kept is replayed through an AddressSanitizer build, which checks the
# unsafe-pointer code (guest memory, the C usbredir guard) on all of them.
#
#   scripts/fuzz.sh                 every target to 10 million executions (~1-1.5 h on 2 cores)
#   scripts/fuzz.sh SECONDS         every target for SECONDS (CI smoke: 30)
#   scripts/fuzz.sh SECONDS T...    only targets T... (SECONDS 0: 10 million executions each)
#   scripts/fuzz.sh --list          the target names
#
# Runs as many targets at once as there are cores (FUZZ_JOBS to change). The corpus each run grows is
# kept in .build-fuzz/corpus/TARGET and reused by the next run. Exits 1 if any
# target crashed, hung or ran out of memory; the input is in .build-fuzz/crashes
# and the line printed for it replays it. A crash found here becomes a test in
# the normal suite (see docs/hardening.md).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(json qga-framer control-framer vdagent-reader guest-stream-filter monitors-config-rewriter
         dbus-message vhost-user-message virtqueue virtio-gpu virtio-input virtio-snd
         usbredir-stream usbredir-filter)

if [[ "${1:-}" == "--list" ]]; then printf '%s\n' "${TARGETS[@]}"; exit 0; fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
SECONDS_PER_TARGET=""
if [[ $# -gt 0 ]]; then
    [[ "$1" =~ ^[0-9]+$ ]] || { echo "fuzz: SECONDS must be a whole number, got '$1' (--help)" >&2; exit 2; }
    SECONDS_PER_TARGET="$1"; shift
fi
if [[ $# -gt 0 ]]; then
    for t in "$@"; do
        [[ " ${TARGETS[*]} " == *" $t "* ]] || { echo "fuzz: no target '$t' (--list)" >&2; exit 2; }
    done
    TARGETS=("$@")
fi

BUILD=${FUZZ_BUILD:-.build-fuzz}  # FUZZ_BUILD: a build, corpus and log directory of its own
build() {  # build-path, extra sanitizer flags...
    local path="$1"; shift
    mkdir -p "$path"
    # SwiftPM's --sanitize fuzzer links libFuzzer but leaves Swift code without
    # coverage counters; -sanitize-coverage adds them to every module.
    if ! HOSTVMM_FUZZ=1 swift build -c release --build-path "$path" --product HostVMMFuzz --sanitize fuzzer "$@" \
        -Xswiftc -sanitize-coverage=edge,pc-table,inline-8bit-counters,trace-cmp > "$path/build.log" 2>&1; then
        grep -E "error|warning: unre" "$path/build.log" | head -20 >&2
        echo "fuzz: the build in $path failed (whole log: $path/build.log)" >&2
        exit 1
    fi
}
echo "fuzz: building the targets (release; libFuzzer, and libFuzzer + AddressSanitizer)"
build "$BUILD"
build "$BUILD-asan" --sanitize address
BIN="$BUILD/release/HostVMMFuzz"
ASAN_BIN="$BUILD-asan/release/HostVMMFuzz"

mkdir -p "$BUILD/crashes" "$BUILD/logs"
if [[ -n "$SECONDS_PER_TARGET" && "$SECONDS_PER_TARGET" != 0 ]]; then LIMIT=(-max_total_time="$SECONDS_PER_TARGET")
else LIMIT=(-runs=10000000); fi
# Inputs up to 1 KiB: enough for several messages or requests per input (each
# stream target also cuts its input into reads), at 3-4x the rate of 4 KiB.
MAX_LEN=${FUZZ_MAX_LEN:-1024}

run_target() {
    local t="$1" corpus="$BUILD/corpus/$1"
    mkdir -p "$corpus"
    # The first directory is the one libFuzzer adds to; the committed seeds are only read.
    # Swift's own backtracer off: libFuzzer's handler must see the crash to save the input.
    SWIFT_BACKTRACE=enable=no HOSTVMM_FUZZ_TARGET="$t" "$BIN" "${LIMIT[@]}" -max_len=$MAX_LEN -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$BUILD/crashes/$t-" "$corpus" "Fuzz/corpus/$t" \
        > "$BUILD/logs/$t.log" 2>&1 || return $?
    # Every input kept, through AddressSanitizer (-runs=0: the corpus only).
    SWIFT_BACKTRACE=enable=no HOSTVMM_FUZZ_TARGET="$t" "$ASAN_BIN" -runs=0 -max_len=$MAX_LEN -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$BUILD/crashes/$t-asan-" "$corpus" "Fuzz/corpus/$t" > "$BUILD/logs/$t.asan.log" 2>&1
}

JOBS=${FUZZ_JOBS:-$(nproc)}
started=$(date +%s)
for t in "${TARGETS[@]}"; do
    while [[ $(jobs -rp | wc -l) -ge $JOBS ]]; do wait -n || true; done
    echo "fuzz: $t"
    ( run_target "$t"; echo $? > "$BUILD/logs/$t.rc" ) || true &
done
wait

failed=0
printf '\n%-26s %12s %9s %6s %8s %7s %s\n' target executions exec/s edges features corpus "result (fuzzing, then the corpus under ASan)"
for t in "${TARGETS[@]}"; do
    log="$BUILD/logs/$t.log"
    rc=$(cat "$BUILD/logs/$t.rc" 2>/dev/null || echo "?")
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    edges=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$last")
    features=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$last")
    corpus=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<< "$last")
    if [[ "$rc" == 0 ]]; then result=ok; else
        result="FAILED (rc $rc)"; failed=1
    fi
    printf '%-26s %12s %9s %6s %8s %7s %s\n' "$t" "${execs:-?}" "${rate:-?}" "${edges:-?}" "${features:-?}" "${corpus:-?}" "$result"
done
echo "fuzz: $(( $(date +%s) - started )) s"
if [[ $failed == 1 ]]; then
    for t in "${TARGETS[@]}"; do
        [[ "$(cat "$BUILD/logs/$t.rc" 2>/dev/null)" == 0 ]] && continue
        echo "--- $t ($BUILD/logs/$t.log):"
        grep -hE "invariant broken|ERROR: |Fatal error|Test unit written" "$BUILD/logs/$t.log" "$BUILD/logs/$t.asan.log" 2>/dev/null | head -5
        for f in "$BUILD/crashes/$t-"*; do
            [[ -e "$f" ]] && echo "    replay: SWIFT_BACKTRACE=enable=no HOSTVMM_FUZZ_TARGET=$t $ASAN_BIN $f"
        done
    done
    exit 1
fi
