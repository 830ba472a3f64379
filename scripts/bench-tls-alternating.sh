#!/usr/bin/env bash
# TLS and tokens against plaintext, each measurement on a fresh 3-node
# cluster: the plain and the secure variant alternate ROUNDS times, so that
# drift in the machine's speed falls on both. A companion to bench-tls.sh,
# whose two long-lived clusters share the machine for the whole run.
#
# Each round starts 3 kv-server processes on 127.0.0.1 with the variant's
# flags, loads them with `kvctl bench` (puts, 64 clients) and then with wrk
# (puts, 64 connections, to the leader), and stops them. Variants: plain;
# secure (peer TLS, HTTPS and tokens); and, with --each, peer TLS, HTTPS and
# tokens one at a time. Prints one line per measurement and the means.
#
# Usage: scripts/bench-tls-alternating.sh [--rounds N] [--seconds N] [--each]
# Needs: cargo, jq, curl, wrk (apt-get installs jq and wrk if missing).

set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/bench-tables.sh
source scripts/lib/bench-tables.sh

rounds=3
seconds=8
variants=(plain secure)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2"; shift ;;
    --seconds) seconds="$2"; shift ;;
    --each) variants=(plain secure peer-tls https tokens) ;;
    -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

missing=()
command -v jq >/dev/null || missing+=(jq)
command -v wrk >/dev/null || missing+=(wrk)
if [[ ${#missing[@]} -gt 0 ]]; then
  sudo=""; if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
cargo build --release --quiet -p kv-app -p kv-tools --bins
bin="${CARGO_TARGET_DIR:-target}/release"

tmp="$(mktemp -d -t bench-tls-alt.XXXXXX)"
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The certificates and tokens, made once by `kvctl cluster up --tls`.
"$bin/kvctl" cluster up --tls --nodes 3 --dir "$tmp/pki" --bin "$bin/kv-server" >/dev/null
"$bin/kvctl" cluster down --dir "$tmp/pki" >/dev/null
d="$tmp/pki/secrets"
token="$(cat "$d/admin.token")"

port_base=$(( 20000 + RANDOM % 20000 ))
measure() { # variant, round
  local v="$1" n="$2" i members="" scheme="http://" client=() eps="" leader="" line wrk_line
  local http_port=$((port_base)) raft_port=$((port_base + 10))
  port_base=$((port_base + 20))
  for i in 1 2 3; do members+="${members:+,}$i=127.0.0.1:$((raft_port + i))/127.0.0.1:$((http_port + i))"; done
  pids=()
  for i in 1 2 3; do
    local peer=(--peer-ca "$d/ca.pem" --peer-cert "$d/node-$i.pem" --peer-key "$d/node-$i.key")
    local https=(--tls-ca "$d/ca.pem" --tls-cert "$d/node-$i.pem" --tls-key "$d/node-$i.key")
    local tokens=(--token-file "$d/tokens" --cluster-secret-file "$d/cluster-secret")
    local extra=()
    case "$v" in
      secure) extra=("${peer[@]}" "${https[@]}" "${tokens[@]}") ;;
      peer-tls) extra=("${peer[@]}") ;;
      https) extra=("${https[@]}") ;;
      tokens) extra=("${tokens[@]}") ;;
    esac
    "$bin/kv-server" --id "$i" --data-dir "$tmp/$v-$n-$i" --http-addr "127.0.0.1:$((http_port + i))" \
      --raft-addr "127.0.0.1:$((raft_port + i))" --initial-members "$members" "${extra[@]}" \
      >"$tmp/$v-$n-$i.log" 2>&1 &
    pids+=("$!")
  done
  case "$v" in
    secure) scheme="https://"; client=(--cacert "$d/ca.pem" --token "$token") ;;
    https) scheme="https://"; client=(--cacert "$d/ca.pem") ;;
    tokens) client=(--token "$token") ;;
  esac
  local curl_args=(-sf --cacert "$d/ca.pem" -H "Authorization: Bearer $token")
  for _ in $(seq 100); do
    for i in 1 2 3; do
      if curl "${curl_args[@]}" "${scheme}127.0.0.1:$((http_port + i))/v1/cluster/status" 2>/dev/null |
          jq -e '.role == "leader"' >/dev/null; then leader="127.0.0.1:$((http_port + i))"; fi
    done
    [[ -n "$leader" ]] && break
    sleep 0.2
  done
  [[ -n "$leader" ]] || { echo "variant $v: no leader; logs in $tmp" >&2; exit 1; }
  for i in 1 2 3; do eps+="${eps:+,}${scheme}127.0.0.1:$((http_port + i))"; done
  line="$("$bin/kvctl" "${client[@]}" bench --endpoints "$eps" --server-pids "$(IFS=,; echo "${pids[*]}")" \
    --clients 64 --duration "$seconds" --warmup 2 --json |
    jq -c '{ops: (.ops_per_sec | round), p50_ms: (.latency_us.p50 / 1000), cpu_us: (.server_cpu_us_per_op | round), errors}')"
  local token_env=""
  if [[ "$v" == secure || "$v" == tokens ]]; then token_env="$token"; fi
  wrk_line="$(KV_TOKEN="$token_env" wrk_puts "${scheme}$leader" 64 scripts/wrk/kv-put.lua 2 "$seconds" "$tmp/wrk-$v-$n.txt")"
  jq -nc --arg v "$v" --argjson n "$n" --argjson bench "$line" --arg wrk "$wrk_line" \
    '{variant: $v, round: $n, bench: $bench, wrk_req_s: ($wrk | split(" ")[0] | tonumber)}' | tee -a "$tmp/all.jsonl"
  kill "${pids[@]}"
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
}

for n in $(seq "$rounds"); do
  for v in "${variants[@]}"; do measure "$v" "$n"; done
done

echo
echo "$(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), kv $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $rounds rounds, puts at 64 clients, ${seconds} s each"
jq -rs 'group_by(.variant) | map({v: .[0].variant, bench: (map(.bench.ops) | add / length | round),
    cpu: (map(.bench.cpu_us) | add / length | round), wrk: (map(.wrk_req_s) | add / length | round)}) as $m |
  ($m | map(select(.v == "plain"))[0]) as $p |
  $m[] | "\(.v)\tkvctl bench \(.bench)/s (\(.bench / $p.bench * 100 | round)% of plain), server CPU \(.cpu) µs/put\twrk \(.wrk)/s (\(.wrk / $p.wrk * 100 | round)% of plain)"' \
  "$tmp/all.jsonl" | column -t -s $'\t'
