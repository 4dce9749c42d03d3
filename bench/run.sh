#!/bin/bash
# Runs jitgate's benchmarks in network namespaces (root needed) and keeps the
# numbers in bench/results/ (JSON per benchmark, the machine, the log).
# BENCH_RUN=TestGrantLatency bench/run.sh runs one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "bench/run.sh: run as root (it creates network namespaces and nftables tables)" >&2
	exit 1
fi
mkdir -p bench/results
{
	echo "date:   $(date -u +%FT%TZ)"
	echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
	echo "nproc:  $(nproc)"
	echo "cpu:    $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
	echo "kernel: $(uname -r)"
	echo "go:     $(go version)"
	echo "nft:    $(nft --version)"
	echo "load:   $(cut -d" " -f1-3 /proc/loadavg) (1, 5, 15 min; other work on the machine skews timings)"
	free -h
} | tee bench/results/machine.txt
go test -tags bench -count=1 -run "${BENCH_RUN:-.}" -v -timeout 30m ./bench/ 2>&1 | tee bench/results/run.log
