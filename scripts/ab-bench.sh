#!/usr/bin/env bash
# A/B of two builds with `couponrush bench`, interleaved (A, B, A, B, …) so that a machine whose
# speed drifts (shared hosts) hurts both sides alike. Prints one line per run and the medians.
#
#   scripts/ab-bench.sh <checkout-A> <checkout-B> [pairs] [-- bench flags…]
#
# Each checkout must be built (`npm ci` builds dist/). DATABASE_URL and REDIS_URL as for the bench.
# A_ENV / B_ENV: extra server variables for each side, e.g. A_ENV="RATE_LIMIT_USER=20/10s".
# A_FLAGS / B_FLAGS: extra bench flags for each side, e.g. B_FLAGS=--watch-console (one build, two ways).
# Default bench flags: --strategies redis-lua-async-cached --no-ceiling. Prints req/s, API CPU µs/req,
# × ceiling and CPU × ceiling (when the flags keep the ceiling; overall and per phase of a sold-out
# stampede: admissions until the first 410, refusals after) and p99 per run, then the medians.
# See docs/performance.md.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
dir_a=$(cd "$1" && pwd)
dir_b=$(cd "$2" && pwd)
pairs=${3:-5}
shift $(( $# >= 3 ? 3 : 2 ))
[[ ${1:-} == -- ]] && shift
flags=("$@")
[[ ${#flags[@]} -eq 0 ]] && flags=(--strategies redis-lua-async-cached --no-ceiling)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

summary=()
for i in $(seq 1 "$pairs"); do
  for side in A B; do
    if [[ $side == A ]]; then dir=$dir_a; extra=${A_ENV:-}; side_flags=${A_FLAGS:-}; else dir=$dir_b; extra=${B_ENV:-}; side_flags=${B_FLAGS:-}; fi
    # shellcheck disable=SC2086 # A_ENV/B_ENV and A_FLAGS/B_FLAGS are word lists on purpose
    (cd "$dir" && env $extra node bin/couponrush.js bench "${flags[@]}" $side_flags --no-progress --out "$out/$side-$i" >"$out/$side-$i.log" 2>&1) ||
      { echo "run $side-$i failed; its output:" >&2; tail -20 "$out/$side-$i.log" >&2; exit 1; }
    line=$(node -e '
      const r = require(process.argv[1] + "/latest.json");
      for (const s of r.strategies) {
        if (s.latencyMs === undefined) continue; // a strategy this configuration cannot run (redis-lua-kafka without Kafka)
        // Each phase of a sold-out stampede (admissions until the first 410, refusals after): the ceiling CPU over the phase CPU.
        const phase = (p) => (s.ceilingCpuUsPerResponse === undefined || p?.cpuUsPerResponse === undefined ? "—" : (s.ceilingCpuUsPerResponse / p.cpuUsPerResponse).toFixed(2));
        console.log([process.argv[2], s.name, Math.round(s.requestsPerSecond), (s.cpuUsPerResponse ?? NaN).toFixed(1), s.verdict.replace(/ /g, "-"),
          s.ratioToCeiling === undefined ? "—" : s.ratioToCeiling.toFixed(2), s.latencyMs.p99.toFixed(1),
          s.cpuRatioToCeiling === undefined ? "—" : s.cpuRatioToCeiling.toFixed(2), phase(s.sellOut?.before), phase(s.sellOut?.after)].join(" "));
      }
    ' "$out/$side-$i" "$side")
    echo "$line" | awk '{ printf "%s %-24s %7d req/s %6s µs CPU/req  %5s × ceiling  %5s CPU × ceiling (admissions %s, refusals %s)  p99 %5s ms  %s\n", $1, $2, $3, $4, $6, $8, $9, $10, $7, $5 }'
    summary+=("$line")
  done
done
printf '%s\n' "${summary[@]}" | node -e '
  const rows = require("fs").readFileSync(0, "utf8").trim().split("\n").map((l) => l.split(" "));
  const med = (a) => { const b = [...a].sort((x, y) => x - y); const m = b.length >> 1; return b.length % 2 ? b[m] : (b[m - 1] + b[m]) / 2; };
  for (const name of new Set(rows.map((r) => r[1]))) {
    const side = (s) => rows.filter((r) => r[0] === s && r[1] === name);
    const a = side("A"), b = side("B");
    const rps = (x) => med(x.map((r) => Number(r[2]))), cpu = (x) => med(x.map((r) => Number(r[3])));
    const ratios = a.map((r, i) => Number(r[2]) / Number(b[i][2]));
    const extra = (x) => {
      const c = med(x.map((r) => Number(r[5]))), cc = med(x.map((r) => Number(r[7])));
      const adm = med(x.map((r) => Number(r[8]))), ref = med(x.map((r) => Number(r[9])));
      return (Number.isNaN(c) ? "" : `, ${c.toFixed(2)} × ceiling`) + (Number.isNaN(cc) ? "" : `, ${cc.toFixed(2)} CPU × ceiling`) +
        (Number.isNaN(adm) ? "" : ` (admissions ${adm.toFixed(2)}, refusals ${ref.toFixed(2)})`) + `, p99 ${med(x.map((r) => Number(r[6]))).toFixed(1)} ms`;
    };
    console.log(`${name}: A ${Math.round(rps(a))} req/s, ${cpu(a).toFixed(1)} µs CPU/req${extra(a)} | B ${Math.round(rps(b))} req/s, ${cpu(b).toFixed(1)} µs CPU/req${extra(b)} | ` +
      `A/B req/s: medians ${(rps(a) / rps(b)).toFixed(3)}, median of pairs ${med(ratios).toFixed(3)} (${ratios.map((x) => x.toFixed(2)).join(" ")})`);
  }
'
