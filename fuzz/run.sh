#!/usr/bin/env bash
# Runs the fuzz targets (see fuzz/README.md).
#   bash fuzz/run.sh [SECONDS] [TARGET...]  fuzz each target for SECONDS (default 600),
#                                           starting from its saved corpus and the seeds;
#                                           new inputs go to fuzz/corpus/<target>/
#   bash fuzz/run.sh --replay [TARGET...]   run every saved input once (CI replays them through
#                                           agent/tests/fuzz_corpus.rs instead, without ASan)
#   bash fuzz/run.sh --cmin [TARGET...]     minimize the saved corpora
# Only stable Rust is needed: cargo fuzz's nightly flags are allowed by
# RUSTC_BOOTSTRAP=1. Needs cargo-fuzz (`cargo install cargo-fuzz --locked`).
# Crashes go to fuzz/artifacts/<target>/; logs to fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1

mode=run
seconds=600
case "${1:-}" in
--replay) mode=replay; shift ;;
--cmin) mode=cmin; shift ;;
'' ) ;;
*[!0-9]*) ;;
*) seconds=$1; shift ;;
esac
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2; exit 1; }
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build >/dev/null 2>&1 || cargo fuzz build

failed=0
mkdir -p logs
for t in "${targets[@]}"; do
	mkdir -p "corpus/$t"
	case $mode in
	replay)
		if cargo fuzz run "$t" "corpus/$t" -- -runs=0 >"logs/$t.replay.log" 2>&1; then
			echo "$t: $(ls "corpus/$t" | wc -l) inputs replayed"
		else
			echo "$t: FAILED (logs/$t.replay.log)"; tail -20 "logs/$t.replay.log"; failed=1
		fi
		;;
	cmin)
		cargo fuzz cmin "$t" "corpus/$t" >"logs/$t.cmin.log" 2>&1
		echo "$t: $(ls "corpus/$t" | wc -l) inputs, $(du -sk "corpus/$t" | cut -f1) KB"
		;;
	run)
		seeds=()
		[ -d "seeds/$t" ] && seeds=("seeds/$t")
		if cargo fuzz run "$t" "corpus/$t" "${seeds[@]}" -- -max_total_time="$seconds" \
			-print_final_stats=1 >"logs/$t.log" 2>&1; then :; else failed=1; echo "$t: CRASH (logs/$t.log, artifacts/$t/)"; fi
		# The final figures: executions, speed, coverage, corpus.
		grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "logs/$t.log" | tr '\n' ' '
		echo "<- $t"
		;;
	esac
done
exit $failed
