#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS (default 60) each, from the seeds in seeds/TARGET
# plus what earlier runs found (corpus/TARGET, not committed). A crash is reported with the input
# saved under artifacts/TARGET/ and the script exits non-zero after the other targets ran. Needs
# the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`), and libwasmedge to link: run
# it in the dev root (`make fuzz` does). Usage: fuzz/run.sh [TARGET...]
set -uo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-60}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build -O || exit 1
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  log=$(mktemp)
  echo "==> $t for ${seconds}s"
  if cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^(Done [0-9]+ runs|stat::(number_of_executed_units|new_units_added|peak_rss_mb))' "$log"
  else
    grep -E -A12 'panicked|^==[0-9]+==ERROR|deadly signal|timeout after|out-of-memory' "$log" | head -40
    grep -E 'Test unit written|Base64' "$log"
    failed+=("$t")
  fi
  rm -f "$log"
done
[ ${#failed[@]} -eq 0 ] || { echo "fuzz: crashes in: ${failed[*]}"; exit 1; }
