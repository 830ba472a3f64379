#!/usr/bin/env bash
# kv-server and etcd side by side, loaded by the same generator (`kvctl bench`).
#
# Starts a 3-member etcd cluster and a 3-node kv cluster on 127.0.0.1, each
# member with its own temporary data directory. Both fsync their log before
# acknowledging a write (etcd's WAL by default; kv's log file, fdatasync'd
# before each append counts), and both use 100 ms heartbeats. Then it runs the same loads
# against each, alternating which goes first:
#
#   put at 1, 16, 64 and 256 clients;
#   linearizable reads at 64 clients (after writing every key once);
#   local reads at 64 clients: kv `session`, etcd `serializable`.
#
# Keys are drawn uniformly from 65,536, values are 256 bytes; etcd is driven
# through its JSON gateway (/v3/kv/put, /v3/kv/range), kv through its HTTP API.
# Server CPU per request is the CPU time (utime + stime from /proc/PID/stat) of
# a system's three processes over the measured phase, divided by the requests;
# `kvctl bench --server-pids` samples it at the phase's start and end.
#
# Prints one table with the kv/etcd ratios, and stops everything it started.
#
# Usage: scripts/bench-vs-etcd.sh [--quick] [--seconds N] [--warmup N]
#                                  [--markdown FILE] [--json FILE] [--keep]
#   --quick          3 s per load after 1 s of warm-up (a smoke run)
#   --seconds N      measured seconds per load (default 10)
#   --warmup N       warm-up seconds per load (default 2)
#   --markdown FILE  also write the table, with the machine, as markdown
#   --json FILE      also write every load's full report as a JSON array
#   --etcd-port P    etcd client ports P+1..P+3, peer ports P+11..P+13 (default 23790)
#   --keep           keep the data directories and logs (path printed at exit)
#   --pool P         kvctl bench's --pool: connection (default: each client its own
#                    bare HTTP/1.1 connection), shared or per-client (reqwest's pool)
#   --wrk            also run the puts at 1, 64 and 256 connections with wrk, a lighter
#                    generator (scripts/wrk/*.lua), against each leader, and print
#                    a second table (installs wrk with apt-get if missing)
#
# Needs: apt-get (to install etcd-server, etcd-client and jq if missing;
# sudo when not root), cargo, curl.

set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/bench-tables.sh
source scripts/lib/bench-tables.sh

seconds=10
warmup=2
markdown_out=""
json_out=""
etcd_port=23790
keep=0
use_wrk=0
pool=connection
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) seconds=3; warmup=1 ;;
    --seconds) seconds="$2"; shift ;;
    --warmup) warmup="$2"; shift ;;
    --markdown) markdown_out="$2"; shift ;;
    --json) json_out="$2"; shift ;;
    --etcd-port) etcd_port="$2"; shift ;;
    --keep) keep=1 ;;
    --wrk) use_wrk=1 ;;
    --pool) pool="$2"; shift ;;
    -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '\n== %s\n' "$*" >&2; }

# --- Prerequisites -----------------------------------------------------------

sudo=""
if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi
missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
command -v jq >/dev/null || missing+=(jq)
if [[ "$use_wrk" -eq 1 ]]; then command -v wrk >/dev/null || missing+=(wrk); fi
if [[ ${#missing[@]} -gt 0 ]]; then
  log "installing ${missing[*]}"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

log "building release binaries"
cargo build --release --quiet -p kv-app -p kv-tools --bins
bin="${CARGO_TARGET_DIR:-target}/release"
kvctl="$bin/kvctl"

# --- Clusters, and stopping them ---------------------------------------------

tmp="$(mktemp -d -t bench-vs-etcd.XXXXXX)"
etcd_pids=()
cleanup() {
  local status=$?
  for pid in "${etcd_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${etcd_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -f "$tmp/kv/cluster.json" ]]; then "$kvctl" cluster down --dir "$tmp/kv" >/dev/null 2>&1 || true; fi
  if [[ "$keep" -eq 1 ]]; then echo "data and logs kept in $tmp" >&2; else rm -rf "$tmp"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

log "starting a 3-member etcd cluster ($(etcd --version | head -1))"
initial_cluster=""
for i in 1 2 3; do
  initial_cluster+="${initial_cluster:+,}e$i=http://127.0.0.1:$((etcd_port + 10 + i))"
done
etcd_endpoints=""
for i in 1 2 3; do
  client=$((etcd_port + i))
  peer=$((etcd_port + 10 + i))
  for p in "$client" "$peer"; do
    if port_in_use "$p"; then echo "port $p is in use; choose others with --etcd-port" >&2; exit 1; fi
  done
  mkdir -p "$tmp/etcd"
  # --quota-backend-bytes: etcd keeps every revision until compaction; 8 GiB
  # leaves room for a run's puts without an alarm.
  etcd --name "e$i" --data-dir "$tmp/etcd/e$i" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$initial_cluster" --initial-cluster-token bench-vs-etcd --initial-cluster-state new \
    --quota-backend-bytes $((8 * 1024 * 1024 * 1024)) --logger zap --log-level warn \
    >"$tmp/etcd/e$i.log" 2>&1 &
  etcd_pids+=("$!")
  etcd_endpoints+="${etcd_endpoints:+,}http://127.0.0.1:$client"
done
for i in 1 2 3; do
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$((etcd_port + i))/health" 2>/dev/null | grep -q '"health":"true"' && break
    sleep 0.2
  done
  curl -sf "http://127.0.0.1:$((etcd_port + i))/health" | grep -q '"health":"true"' ||
    { echo "etcd member e$i did not become healthy; see $tmp/etcd/e$i.log" >&2; keep=1; exit 1; }
done
etcd_pid_list="$(IFS=,; echo "${etcd_pids[*]}")"

log "starting a 3-node kv cluster"
"$kvctl" cluster up --nodes 3 --dir "$tmp/kv" --bin "$bin/kv-server" --json >"$tmp/kv-cluster.json"
kv_endpoints="$(jq -r '[.nodes[].http_addr] | join(",")' "$tmp/kv-cluster.json")"
kv_pid_list="$(jq -r '[.nodes[].pid] | join(",")' "$tmp/kv-cluster.json")"

# --- Loads -------------------------------------------------------------------

# name | kvctl bench options shared by both systems
loads=(
  "put, 1 client|--clients 1"
  "put, 16 clients|--clients 16"
  "put, 64 clients|--clients 64"
  "put, 256 clients|--clients 256"
  "linearizable get, 64|--clients 64 --read-ratio 1 --consistency linearizable --prefill"
  "session / serializable get, 64|--clients 64 --read-ratio 1 --consistency session"
)

mkdir -p "$tmp/results"
run_one() { # system, load index, load name, options...
  local system="$1" n="$2" name="$3"
  shift 3
  local endpoints pids out="$tmp/results/$n-$system.json"
  if [[ "$system" == kv ]]; then endpoints="$kv_endpoints" pids="$kv_pid_list"
  else endpoints="$etcd_endpoints" pids="$etcd_pid_list"; fi
  echo "-- $system: $name" >&2
  # shellcheck disable=SC2068 # the options are meant to split into words
  if "$kvctl" bench --target "$system" --endpoints "$endpoints" --server-pids "$pids" \
      --duration "$seconds" --warmup "$warmup" --pool "$pool" --json $@ >"$out.tmp"; then
    jq -c --arg load "$name" --arg system "$system" --argjson n "$n" \
      '. + {load: $load, system: $system, n: $n}' "$out.tmp" >"$out"
  else
    echo "   $system: '$name' failed" >&2
    jq -nc --arg load "$name" --arg system "$system" --argjson n "$n" \
      '{load: $load, system: $system, n: $n, failed: true}' >"$out"
  fi
  rm -f "$out.tmp"
}

for n in "${!loads[@]}"; do
  name="${loads[$n]%%|*}"
  opts="${loads[$n]#*|}"
  log "load $((n + 1))/${#loads[@]}: $name"
  # Alternate which system goes first, so that neither always runs on a
  # machine still busy with the other's aftermath.
  if ((n % 2 == 0)); then order=(kv etcd); else order=(etcd kv); fi
  for system in "${order[@]}"; do
    # shellcheck disable=SC2086
    run_one "$system" "$n" "$name" $opts
  done
done

# --- The table ---------------------------------------------------------------

jq -s 'sort_by(.n, .system)' "$tmp"/results/*.json >"$tmp/all.json"
if [[ -n "$json_out" ]]; then cp "$tmp/all.json" "$json_out"; fi

machine="$(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(uname -sr), \
etcd $(etcd --version | sed -n 's/^etcd Version: //p'), kv $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
settings="3 members each on 127.0.0.1; 65,536 keys, 256-byte values; ${seconds} s per load after ${warmup} s warm-up; kvctl bench --pool ${pool}; $(date -u +%Y-%m-%dT%H:%MZ)"

# One row per load: TSV, cells already formatted.
rows="$(side_by_side_rows "$tmp/all.json" system kv etcd)"
header="$(side_by_side_header kv etcd)"
# The generator shares the machine: say how much of it it took.
generator="$(generator_note "$tmp/all.json" system)"

print_table "$machine" "$settings" "$header" "$rows" "$generator" "$markdown_out"

# --- The same puts with wrk --------------------------------------------------

if [[ "$use_wrk" -eq 1 ]]; then
  # Each system's leader, so that no request pays a forwarding hop.
  kv_leader=""
  for ep in ${kv_endpoints//,/ }; do
    if curl -sf "http://$ep/v1/cluster/status" | jq -e '.role == "leader"' >/dev/null; then kv_leader="$ep"; fi
  done
  etcd_leader="$(etcdctl --endpoints="$etcd_endpoints" endpoint status -w json |
    jq -r '.[] | select(.Status.leader == .Status.header.member_id) | .Endpoint')"
  wrk_rows=""
  for conns in 1 64 256; do
    log "wrk: kv and etcd, puts over $conns connection(s)"
    kv="$(wrk_puts "http://$kv_leader" "$conns" scripts/wrk/kv-put.lua "$warmup" "$seconds" "$tmp/results/wrk-kv-$conns.txt")"
    etcd="$(wrk_puts "$etcd_leader" "$conns" scripts/wrk/etcd-put.lua "$warmup" "$seconds" "$tmp/results/wrk-etcd-$conns.txt")"
    wrk_rows+="$(wrk_row "put, $conns connection(s)" "$kv" "$etcd")"$'\n'
  done
  wrk_rows="${wrk_rows%$'\n'}"
  wrk_header=$'wrk load\tkv req/s\tetcd req/s\tkv/etcd\tkv p50 ms\tetcd p50 ms\tkv/etcd\tkv p99 ms\tetcd p99 ms\tkv/etcd'
  printf '\n%s\n%s\n' "$wrk_header" "$wrk_rows" | column -t -s $'\t'
  if [[ -n "$markdown_out" ]]; then
    {
      printf '\nThe same puts with wrk (%s), to each leader:\n\n' "$(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
      markdown_rows "$wrk_header" "$wrk_rows" 9
    } >>"$markdown_out"
  fi
fi
