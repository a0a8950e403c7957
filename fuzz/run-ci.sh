#!/usr/bin/env bash
# A short, bounded cargo-fuzz run of every target, for CI (called from .ci/run after the tests).
#
# Needs the nightly toolchain; installs cargo-fuzz if nightly is there and it is missing. Without
# nightly it says so and skips: the stable replay of the committed corpus
# (crates/fuzz-targets/tests/corpus.rs) has run in `cargo test` either way.
#
# A crash fails the script (and CI); libFuzzer writes the reproducer to
# fuzz/artifacts/<target>/, which is printed. Add it to fuzz/corpus/<target>/ with the fix.
#
# FUZZ_SECONDS: seconds per target (default 30; four targets).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
targets=(state_machine protocol raft_codec config)

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: SKIPPED: no nightly toolchain (rustup toolchain install nightly); the corpus replay ran in cargo test"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  if ! cargo install cargo-fuzz --locked; then
    echo "fuzz: SKIPPED: cargo-fuzz could not be installed; the corpus replay ran in cargo test"
    exit 0
  fi
fi

# The workspace's versions: start from its lock file (cargo adds libfuzzer-sys).
cp Cargo.lock fuzz/Cargo.lock
echo "fuzz: building ${#targets[@]} targets (nightly, address sanitizer)"
cargo +nightly fuzz build -O

total=0
for t in "${targets[@]}"; do
  log="$(mktemp)"
  # The run mutates a copy of the committed corpus: CI leaves the tree as it found it.
  work="$(mktemp -d)"
  cp -r "fuzz/corpus/$t/." "$work/"
  mkdir -p "fuzz/artifacts/$t"
  dict=()
  [[ -f "fuzz/dict/$t.dict" ]] && dict=(-dict="fuzz/dict/$t.dict")
  echo "fuzz: $t for ${seconds}s"
  if ! cargo +nightly fuzz run -O "$t" "$work" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
    -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $t FOUND A CRASH; reproducer(s):"
    ls -1 "fuzz/artifacts/$t" || true
    rm -rf "$work"
    exit 1
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  echo "fuzz: $t ok: ${runs:-?} executions in ${seconds}s, corpus $(ls -1 "$work" | wc -l) inputs"
  total=$((total + ${runs:-0}))
  rm -rf "$work" "$log"
done
echo "fuzz: all ${#targets[@]} targets clean, ${total} executions"
