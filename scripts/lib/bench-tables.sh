# Shared by the side-by-side benchmark scripts (bench-vs-etcd.sh,
# bench-tls.sh): printing a comparison table, and running wrk as a second,
# lighter load generator. Source it; it defines functions only.

# Prints MACHINE, SETTINGS, then the TSV table HEADER + ROWS aligned, then
# NOTE; with MARKDOWN_OUT set, also writes them there as Markdown.
#   print_table MACHINE SETTINGS HEADER ROWS NOTE MARKDOWN_OUT
print_table() {
  local machine="$1" settings="$2" header="$3" rows="$4" note="$5" out="$6" cols
  printf '\n%s\n%s\n\n' "$machine" "$settings"
  printf '%s\n%s\n' "$header" "$rows" | column -t -s $'\t'
  printf '\n%s\n' "$note"
  if [[ -n "$out" ]]; then
    cols="$(awk -F'\t' '{ print NF - 1; exit }' <<<"$header")"
    {
      printf '%s\n\n%s\n\n' "$machine" "$settings"
      markdown_rows "$header" "$rows" "$cols"
      printf '\n%s\n' "$note"
    } >"$out"
    echo "table written to $out" >&2
  fi
}

# A TSV HEADER and ROWS as a Markdown table whose first column is text and
# the other COLS are numbers.
markdown_rows() {
  local header="$1" rows="$2" cols="$3" row
  printf '| %s |\n' "${header//$'\t'/ | }"
  printf '|---|%s\n' "$(printf -- '---:|%.0s' $(seq "$cols"))"
  while IFS= read -r row; do printf '| %s |\n' "${row//$'\t'/ | }"; done <<<"$rows"
}

# wrk's "1.23ms", "850.00us" or "1.02s" -> milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}

# A / B as "1.23×", or "–" when B is zero.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "–" }'; }

# Runs wrk with SCRIPT against URL over CONNS connections: WARMUP seconds
# thrown away, then SECONDS measured; saves wrk's output in SAVE and prints
# "REQ_PER_S P50_MS P99_MS". Fails if any answer was not 2xx.
#   wrk_puts URL CONNS SCRIPT WARMUP SECONDS SAVE
wrk_puts() {
  local url="$1" conns="$2" script="$3" warmup="$4" seconds="$5" save="$6" threads out
  threads=$(( conns < 2 ? 1 : 2 ))
  wrk -t"$threads" -c"$conns" -d"${warmup}s" -s "$script" "$url" >/dev/null
  out="$(wrk -t"$threads" -c"$conns" -d"${seconds}s" --latency -s "$script" "$url")"
  echo "$out" >"$save"
  if grep -q "Non-2xx" <<<"$out"; then echo "wrk against $url: $(grep Non-2xx <<<"$out")" >&2; return 1; fi
  printf '%s %s %s\n' "$(awk '/^Requests\/sec/ { printf "%d", $2 }' <<<"$out")" \
    "$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")" \
    "$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
}

# One wrk table row: NAME, then A's and B's req/s, p50 and p99, each with
# the ratio A/B, from two "REQ_PER_S P50_MS P99_MS" lines.
#   wrk_row NAME "A_LINE" "B_LINE"
wrk_row() {
  local name="$1" ar ap50 ap99 br bp50 bp99
  read -r ar ap50 ap99 <<<"$2"
  read -r br bp50 bp99 <<<"$3"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$ar" "$br" "$(ratio "$ar" "$br")" \
    "$ap50" "$bp50" "$(ratio "$ap50" "$bp50")" "$ap99" "$bp99" "$(ratio "$ap99" "$bp99")"
}

# The rows of a side-by-side table from `kvctl bench --json` results in FILE
# (a JSON array; each result has .n, .load and FIELD naming its side): one
# TSV row per load, A first: throughput, p50, p99 and server CPU per
# operation of A and of B, each followed by A/B.
#   side_by_side_rows FILE FIELD A B
side_by_side_rows() {
  jq -r --arg f "$2" --arg a "$3" --arg b "$4" '
    def f2: (. * 100 | round) as $c | "\($c / 100 | floor).\($c % 100 | if . < 10 then "0\(.)" else "\(.)" end)";
    def r(x; y): if (x // 0) > 0 and (y // 0) > 0 then "\(x / y | f2)×" else "–" end;
    def k(x): if x == null then "–" else (x | round | tostring) end;
    def ms(x): if x == null then "–" else (x / 1000 | f2) end;
    def err(x): if x.failed then "failed" elif (x.errors // 0) > 0 then " (\(x.errors) errors)" else "" end;
    group_by(.n)[] | (map(select(.[$f] == $a))[0]) as $x | (map(select(.[$f] == $b))[0]) as $y |
    [ $x.load,
      "\(k($x.ops_per_sec))\(err($x))", "\(k($y.ops_per_sec))\(err($y))", r($x.ops_per_sec; $y.ops_per_sec),
      ms($x.latency_us.p50), ms($y.latency_us.p50), r($x.latency_us.p50; $y.latency_us.p50),
      ms($x.latency_us.p99), ms($y.latency_us.p99), r($x.latency_us.p99; $y.latency_us.p99),
      k($x.server_cpu_us_per_op), k($y.server_cpu_us_per_op), r($x.server_cpu_us_per_op; $y.server_cpu_us_per_op)
    ] | @tsv' "$1"
}

# The header of that table, for sides named A and B.
side_by_side_header() {
  local a="$1" b="$2"
  printf 'load\t%s ops/s\t%s ops/s\t%s/%s\t%s p50 ms\t%s p50 ms\t%s/%s\t%s p99 ms\t%s p99 ms\t%s/%s\t%s CPU µs/op\t%s CPU µs/op\t%s/%s' \
    "$a" "$b" "$a" "$b" "$a" "$b" "$a" "$b" "$a" "$b" "$a" "$b" "$a" "$b" "$a" "$b"
}

# How much of the machine the generator took at most, from the same FILE.
#   generator_note FILE FIELD
generator_note() {
  jq -r --arg f "$2" '[.[] | select(.client_cpu_cores != null)] | if length > 0 then
    (max_by(.client_cpu_cores)) as $m |
    "generator CPU: at most \($m.client_cpu_cores * 100 | round / 100) cores (\($m[$f]), \($m.load): \($m.client_cpu_us_per_op | round) µs/op)"
    else "" end' "$1"
}
