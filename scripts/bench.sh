#!/usr/bin/env bash
# Runs every jitgate benchmark and writes the report (as root, on Debian):
# installs what the benchmarks need (nftables, iproute2, OpenSSH, iptables,
# fwknop server and client, iperf3), runs bench/run.sh (results as JSON in
# bench/results/), then draws the charts into docs/img/ and rewrites the
# generated tables of docs/benchmarks.md from the results of this run.
#   BENCH_RUN=TestPeers scripts/bench.sh     one benchmark (the report keeps
#                                            the other tables as they are)
#   JITGATE_CRASH_TRIALS=50 scripts/bench.sh a shorter crash run
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "scripts/bench.sh: run as root (the benchmarks create network namespaces and firewall rules)" >&2
	exit 1
fi
export PATH="$PATH:/usr/sbin:/sbin:/usr/local/go/bin"
need=()
for pkg_tool in nftables:nft iproute2:ip openssh-server:sshd openssh-client:ssh iptables:iptables-restore \
	fwknop-server:fwknopd fwknop-client:fwknop iperf3:iperf3; do
	pkg=${pkg_tool%%:*}
	tool=${pkg_tool##*:}
	if ! command -v "$tool" >/dev/null 2>&1; then
		need+=("$pkg")
	fi
done
if [ ${#need[@]} -gt 0 ]; then
	echo "installing: ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
modprobe nf_tables 2>/dev/null || true

start=$(date +%s)
bench/run.sh
echo "benchmarks took $(( $(date +%s) - start )) s"
go run ./bench/report -results bench/results -img docs/img -doc docs/benchmarks.md
