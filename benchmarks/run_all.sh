#!/usr/bin/env bash
# Every benchmark of the README's Speed section, one after another, each output in OUT/NAME.txt (stderr in
# NAME.err). Run it on a quiet machine: about 10-25 minutes on 2 cores.
#   benchmarks/run_all.sh [OUT]          (default benchmarks/results/$(date +%F)-local)
set -u
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/$(date +%F)-local}
P=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
run() { n=$1; shift; echo "== $n $(date +%T) $(uptime)" >&2; "$@" >"$OUT/$n.txt" 2>"$OUT/$n.err"; }
run quant_avx512 "$P" benchmarks/bench_quant.py --isa avx512
run quant_avx2 "$P" benchmarks/bench_quant.py --isa avx2
run codec_avx512 "$P" benchmarks/bench_codec.py --isa avx512
run codec_avx2 "$P" benchmarks/bench_codec.py --isa avx2
run convert "$P" benchmarks/bench_convert.py --size-gb 1.2 --shards 4 --repeat 5
run linear "$P" benchmarks/bench_linear.py --repeat 5
run linear_avx2 env FP8PORT_ISA=avx2 "$P" benchmarks/bench_linear.py --repeat 3
run run "$P" benchmarks/bench_run.py --tokens 32 --repeat 3
run run_vs_llama "$P" benchmarks/bench_run.py --tokens 32 --vs-llama 5
run linear_decode "$P" benchmarks/bench_linear.py --decode-like --m 1,8 --repeat 3
echo "== done $(date +%T) $(uptime)" >&2
