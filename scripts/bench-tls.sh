#!/usr/bin/env bash
# What TLS and tokens cost: two 3-node kv clusters side by side, one plain
# (`kvctl cluster up`) and one with peer TLS, HTTPS and bearer tokens
# (`kvctl cluster up --tls`), loaded by the same generator (`kvctl bench`)
# in one run, alternating which goes first.
#
# Loads: puts and linearizable gets, at 1 and 64 clients; 65,536 keys,
# 256-byte values. Prints one table: throughput, p50, p99 and server CPU per
# operation of each, and the secure/plain ratios.
#
# Usage: scripts/bench-tls.sh [--quick] [--seconds N] [--warmup N]
#                             [--markdown FILE] [--wrk] [--keep]
#   --quick          3 s per load after 1 s of warm-up (default 10 s after 2 s)
#   --markdown FILE  also write the table as Markdown to FILE
#   --wrk            also run the puts at 1 and 64 connections with wrk, a
#                    lighter generator (scripts/wrk/kv-put.lua), against each
#                    leader (installs wrk with apt-get if missing)
#   --keep           keep the clusters' data and logs
#
# Needs: cargo, jq (installed with apt-get if missing; sudo when not root).

set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/bench-tables.sh
source scripts/lib/bench-tables.sh

seconds=10
warmup=2
markdown_out=""
keep=0
use_wrk=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) seconds=3; warmup=1 ;;
    --seconds) seconds="$2"; shift ;;
    --warmup) warmup="$2"; shift ;;
    --markdown) markdown_out="$2"; shift ;;
    --keep) keep=1 ;;
    --wrk) use_wrk=1 ;;
    -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '\n== %s\n' "$*" >&2; }

sudo=""
if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi
missing=()
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

tmp="$(mktemp -d -t bench-tls.XXXXXX)"
cleanup() {
  local status=$?
  for c in plain tls; do
    if [[ -f "$tmp/$c/cluster.json" ]]; then "$kvctl" cluster down --dir "$tmp/$c" >/dev/null 2>&1 || true; fi
  done
  if [[ "$keep" -eq 1 ]]; then echo "data and logs kept in $tmp" >&2; else rm -rf "$tmp"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting a plain 3-node cluster and a secure one (peer TLS, HTTPS, tokens)"
"$kvctl" cluster up --nodes 3 --dir "$tmp/plain" --bin "$bin/kv-server" --json >"$tmp/plain.json"
"$kvctl" cluster up --tls --nodes 3 --dir "$tmp/tls" --bin "$bin/kv-server" --json >"$tmp/tls.json"
endpoints() { jq -r --arg s "$2" '[.nodes[] | $s + .http_addr] | join(",")' "$1"; }
pids() { jq -r '[.nodes[].pid] | join(",")' "$1"; }
ca="$tmp/tls/secrets/ca.pem"
token="$(cat "$tmp/tls/secrets/admin.token")"

# name | kvctl bench options
loads=(
  "put, 1 client|--clients 1"
  "put, 64 clients|--clients 64"
  "linearizable get, 1 client|--clients 1 --read-ratio 1 --consistency linearizable --prefill"
  "linearizable get, 64 clients|--clients 64 --read-ratio 1 --consistency linearizable --prefill"
)

mkdir -p "$tmp/results"
run_one() { # cluster (plain|tls), load index, load name, options...
  local c="$1" n="$2" name="$3"
  shift 3
  local out="$tmp/results/$n-$c.json" security=()
  if [[ "$c" == tls ]]; then
    security=(--cacert "$ca" --token "$token")
    eps="$(endpoints "$tmp/tls.json" https://)"
  else
    eps="$(endpoints "$tmp/plain.json" "")"
  fi
  echo "-- $c: $name" >&2
  # shellcheck disable=SC2068 # the options are meant to split into words
  if "$kvctl" "${security[@]}" bench --endpoints "$eps" --server-pids "$(pids "$tmp/$c.json")" \
      --duration "$seconds" --warmup "$warmup" --json $@ >"$out.tmp"; then
    jq -c --arg load "$name" --arg c "$c" --argjson n "$n" '. + {load: $load, cluster: $c, n: $n}' "$out.tmp" >"$out"
  else
    echo "   $c: '$name' failed" >&2
    jq -nc --arg load "$name" --arg c "$c" --argjson n "$n" '{load: $load, cluster: $c, n: $n, failed: true}' >"$out"
  fi
  rm -f "$out.tmp"
}

for n in "${!loads[@]}"; do
  name="${loads[$n]%%|*}"
  opts="${loads[$n]#*|}"
  log "load $((n + 1))/${#loads[@]}: $name"
  if ((n % 2 == 0)); then order=(plain tls); else order=(tls plain); fi
  for c in "${order[@]}"; do
    # shellcheck disable=SC2086
    run_one "$c" "$n" "$name" $opts
  done
done

jq -s 'sort_by(.n, .cluster)' "$tmp"/results/*.json >"$tmp/all.json"
machine="$(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(uname -sr), kv $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
settings="3 nodes each on 127.0.0.1; 65,536 keys, 256-byte values; ${seconds} s per load after ${warmup} s warm-up; $(date -u +%Y-%m-%dT%H:%MZ)"
rows="$(side_by_side_rows "$tmp/all.json" cluster tls plain)"
header="$(side_by_side_header secure plain)"
generator="$(generator_note "$tmp/all.json" cluster)"
print_table "$machine" "$settings" "$header" "$rows" "$generator" "$markdown_out"

if [[ "$use_wrk" -eq 1 ]]; then
  leader_of() { # cluster -> its leader's address
    local c="$1" ep
    for ep in $(jq -r '.nodes[].http_addr' "$tmp/$c.json"); do
      if [[ "$c" == tls ]]; then
        curl -sf --cacert "$ca" -H "Authorization: Bearer $token" "https://$ep/v1/cluster/status"
      else
        curl -sf "http://$ep/v1/cluster/status"
      fi | jq -e '.role == "leader"' >/dev/null && { echo "$ep"; return; }
    done
  }
  wrk_rows=""
  for conns in 1 64; do
    log "wrk: secure and plain, puts over $conns connection(s)"
    secure="$(KV_TOKEN="$token" wrk_puts "https://$(leader_of tls)" "$conns" scripts/wrk/kv-put.lua \
      "$warmup" "$seconds" "$tmp/results/wrk-tls-$conns.txt")"
    plain="$(KV_TOKEN="" wrk_puts "http://$(leader_of plain)" "$conns" scripts/wrk/kv-put.lua \
      "$warmup" "$seconds" "$tmp/results/wrk-plain-$conns.txt")"
    wrk_rows+="$(wrk_row "put, $conns connection(s)" "$secure" "$plain")"$'\n'
  done
  wrk_rows="${wrk_rows%$'\n'}"
  wrk_header=$'wrk load\tsecure req/s\tplain req/s\tsecure/plain\tsecure p50 ms\tplain p50 ms\tsecure/plain\tsecure p99 ms\tplain p99 ms\tsecure/plain'
  printf '\n%s\n%s\n' "$wrk_header" "$wrk_rows" | column -t -s $'\t'
  if [[ -n "$markdown_out" ]]; then
    {
      printf '\nThe same puts with wrk (%s), to each leader:\n\n' "$(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
      markdown_rows "$wrk_header" "$wrk_rows" 9
    } >>"$markdown_out"
  fi
fi
