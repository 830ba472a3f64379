#!/usr/bin/env bash
# TLS and tokens against plaintext, each measurement on a fresh 3-node
# cluster: the plain and the secure variant alternate ROUNDS times, so that
# drift in the machine's speed falls on both. A companion to bench-tls.sh,
# whose two long-lived clusters share the machine for the whole run.
#
# Each round starts 3 kv-server processes on 127.0.0.1 with the variant's
# flags, loads them with `kvctl bench` (puts, 64 clients) and then with wrk
# (puts, 64 connections, to the leader), and stops them. Variants: plain;
# secure (peer TLS, HTTPS and tokens); with --each, peer TLS, HTTPS and
# tokens one at a time; with --control N, "plain-spin": the plain cluster
# loaded by a wrk made slower on purpose (N rounds of Lua arithmetic per
# request, KV_WRK_SPIN in scripts/wrk/kv-put.lua), no TLS anywhere. Pick N
# so that wrk's CPU per put matches what it spends with HTTPS.
#
# For the wrk load it also records the servers' CPU per put (all three
# processes), wrk's own CPU per put, and how many puts went into one log
# entry (puts / growth of the leader's applied index): the proposer groups
# the puts that arrive while the previous entry commits, and each entry
# costs every node an fsync and an AppendEntries round.
#
# Prints one line per measurement and the means.
#
# Usage: scripts/bench-tls-alternating.sh [--rounds N] [--seconds N] [--each] [--control N]
# Needs: cargo, jq, curl, wrk (apt-get installs jq and wrk if missing).

set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
seconds=8
variants=(plain secure)
control=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2"; shift ;;
    --seconds) seconds="$2"; shift ;;
    --each) variants=(plain secure peer-tls https tokens) ;;
    --control) control="$2"; shift ;;
    -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -n "$control" ]]; then variants+=(plain-spin); fi

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

# CPU seconds (user + system) of the processes PIDS so far.
cpu_seconds() {
  local pid ticks=0
  for pid in "$@"; do ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
  awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t / hz }'
}

# The leader's applied index, from its /metrics (URL is the leader's base).
applied_index() {
  curl "${curl_args[@]}" "$1/metrics" | awk '$1 == "kv_raft_applied_index" { print $2 }'
}

# wrk puts to the leader at URL over 64 connections: 2 s of warm-up, then
# $seconds measured, saving wrk's output in SAVE. Prints a JSON object:
# req/s, the servers' and wrk's CPU µs per put, and puts per log entry.
wrk_measured() {
  local url="$1" save="$2" out s0 s1 i0 i1 n TIMEFORMAT='%U %S' wrk_cpu
  wrk -t2 -c64 -d2s -s scripts/wrk/kv-put.lua "$url" >/dev/null
  s0="$(cpu_seconds "${pids[@]}")"
  i0="$(applied_index "$url")"
  out="$( { time wrk -t2 -c64 -d"${seconds}s" --latency -s scripts/wrk/kv-put.lua "$url" 2>/dev/null; } 2>"$save.cpu")"
  s1="$(cpu_seconds "${pids[@]}")"
  i1="$(applied_index "$url")"
  echo "$out" >"$save"
  if grep -q "Non-2xx" <<<"$out"; then echo "wrk against $url: $(grep Non-2xx <<<"$out")" >&2; return 1; fi
  n="$(awk '/ requests in / { print $1 }' <<<"$out")"
  wrk_cpu="$(tail -1 "$save.cpu" | awk '{ print $1 + $2 }')"
  jq -nc --argjson n "$n" --argjson rps "$(awk '/^Requests\/sec/ { printf "%d", $2 }' <<<"$out")" \
    --argjson srv "$(awk -v a="$s0" -v b="$s1" 'BEGIN { print b - a }')" --argjson wrk "$wrk_cpu" \
    --argjson entries "$((i1 - i0))" \
    '{req_s: $rps, server_cpu_us: ($srv / $n * 1e6 | round), wrk_cpu_us: ($wrk / $n * 1e6 * 10 | round / 10),
      puts_per_entry: (if $entries > 0 then ($n / $entries * 10 | round / 10) else null end)}'
}

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
  local token_env="" spin=0
  if [[ "$v" == secure || "$v" == tokens ]]; then token_env="$token"; fi
  if [[ "$v" == plain-spin ]]; then spin="$control"; fi
  if ! wrk_line="$(KV_TOKEN="$token_env" KV_WRK_SPIN="$spin" wrk_measured "${scheme}$leader" "$tmp/wrk-$v-$n.txt")"; then
    # An election in the middle of the run (a busy machine can delay
    # heartbeats) answers some puts 503: this measurement does not count.
    echo "variant $v, round $n: left out" >&2
    kill "${pids[@]}"
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
    return
  fi
  # The 1-minute load average: how busy the machine was (other work included).
  jq -nc --arg v "$v" --argjson n "$n" --argjson bench "$line" --argjson wrk "$wrk_line" \
    --argjson load "$(cut -d' ' -f1 /proc/loadavg)" \
    '{variant: $v, round: $n, bench: $bench, wrk: $wrk, load: $load}' | tee -a "$tmp/all.jsonl"
  kill "${pids[@]}"
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
}

for n in $(seq "$rounds"); do
  for v in "${variants[@]}"; do measure "$v" "$n"; done
done

echo
echo "$(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), kv $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $rounds rounds, puts at 64 clients, ${seconds} s each, load average $(jq -s 'map(.load) | "\(min) to \(max)"' -r "$tmp/all.jsonl")"
jq -rs 'def mean(f): map(f) | add / length;
  group_by(.variant) | map({v: .[0].variant, bench: (mean(.bench.ops) | round), cpu: (mean(.bench.cpu_us) | round),
    wrk: (mean(.wrk.req_s) | round), wsrv: (mean(.wrk.server_cpu_us) | round),
    wcpu: (mean(.wrk.wrk_cpu_us) * 10 | round / 10), ppe: (mean(.wrk.puts_per_entry // 0) * 10 | round / 10)}) as $m |
  ($m | map(select(.v == "plain"))[0]) as $p |
  $m[] | "\(.v)\tkvctl bench \(.bench)/s (\(.bench / $p.bench * 100 | round)% of plain), server CPU \(.cpu) µs/put\twrk \(.wrk)/s (\(.wrk / $p.wrk * 100 | round)% of plain), server CPU \(.wsrv) µs/put, wrk CPU \(.wcpu) µs/put, \(.ppe) puts/entry"' \
  "$tmp/all.jsonl" | column -t -s $'\t'
