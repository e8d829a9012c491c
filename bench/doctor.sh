#!/usr/bin/env bash
# Benchmark: full ctdoctor analysis of a loaded namespace, side by side with
# `conntrack -L > /dev/null` and the usual `conntrack -L | awk` pipelines, in one run.
# Usage (root): bench/doctor.sh [RUNS]   — prints a Markdown table.
# Creates its own namespaces (ctdbench-*) and removes them on exit; changes
# nothing else on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, netlink)" >&2; exit 1; }
for c in conntrack ip go bc /usr/bin/time; do command -v "$c" >/dev/null || { echo "missing $c" >&2; exit 1; }; done

work=$(mktemp -d)
namespaces=()
cleanup() { for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

go build -o "$work/ctdoctor" ./cmd/ctdoctor
# The synthetic table: internal/flowgen (documented mix, same lines for the same size).
go build -o "$work/genflows" ./internal/flowgen/cmd/genflows

# measure NAME NS CMD… : median wall seconds and max RSS (KiB) over RUNS.
measure() {
	local name=$1 ns=$2; shift 2
	local walls=() rss=0
	for _ in $(seq "$RUNS"); do
		/usr/bin/time -f "%e %M" -o "$work/t" ip netns exec "$ns" bash -c "$*" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
		read -r w m <"$work/t"
		walls+=("$w"); (( m > rss )) && rss=$m
	done
	local med
	med=$(printf '%s\n' "${walls[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
	printf '| %s | %s | %s | %.1f |\n' "$name" "$(printf '%s' "$ns" | sed 's/ctdbench-//')" "$med" "$(echo "$rss/1024" | bc -l)"
}

echo "| what | table | wall s (median of $RUNS) | peak RSS MB |"
echo "|---|---|---|---|"
for n in 25000 250000; do
	ns="ctdbench-$n"
	ip netns add "$ns"; namespaces+=("$ns")
	ip -n "$ns" link set lo up
	"$work/genflows" "$n" >"$work/flows-$n.txt"
	ip netns exec "$ns" conntrack -R "$work/flows-$n.txt" 2>/dev/null
	measure "conntrack -L > /dev/null" "$ns" "conntrack -L"
	measure "awk pipeline: L4 protocols (conntrack -L -o extended \| awk)" "$ns" "conntrack -L -o extended 2>/dev/null | awk '{sum[\$3]++} END {for(i in sum) print i, sum[i]}'"
	measure "awk pipeline: TCP states" "$ns" "conntrack -L -o extended 2>/dev/null | awk '/^.*tcp.*\$/ {sum[\$6]++} END {for(i in sum) print i, sum[i]}'"
	measure "awk pipeline: top 10 IPs (sort \| uniq -c)" "$ns" "conntrack -L -o extended 2>/dev/null | awk '{print \$7}' | cut -d '=' -f 2 | sort | uniq -c | sort -nr | head -n 10"
	measure "ctdoctor -o json --interval 0 (full analysis, no rates)" "$ns" "$work/ctdoctor -o json --interval 0"
	measure "ctdoctor (text, default: rates over 1 s)" "$ns" "$work/ctdoctor --color never"
done
