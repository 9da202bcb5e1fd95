#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 30) on stable Rust, starting
# from the seed corpora in fuzz/seeds/<target>. A crash stops the script with
# a non-zero status; keep the input under tests/fuzz_regressions/<target>/.
#
#   fuzz/run.sh [seconds]
#   RUSTC_BOOTSTRAP=1 SANITIZER=address fuzz/run.sh 60   # with ASan
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
sanitizer="${SANITIZER:-none}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# The committed lock file must be current: a stale one would be re-resolved
# here (different dependency versions than reviewed, and a modified checkout).
if ! cargo metadata --locked --format-version 1 >/dev/null 2>&1; then
  echo "fuzz/Cargo.lock is stale: run 'cargo update --workspace' in fuzz/ and commit it" >&2
  exit 1
fi
targets=$(cargo fuzz list)
cargo fuzz build --sanitizer "$sanitizer" --release
for t in $targets; do
  corpus="corpus/$t"
  mkdir -p "$corpus"
  echo "== fuzz $t for ${secs}s"
  cargo fuzz run --sanitizer "$sanitizer" --release "$t" "$corpus" "seeds/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 2>&1 | tail -n 12
  test "${PIPESTATUS[0]}" -eq 0
done
