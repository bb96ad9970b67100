#!/usr/bin/env bash
# `nanguard data describe` against pandas (read_csv + describe) on one generated numeric CSV of
# at least 1 GB with missing values and outliers, in one run: wall time and peak memory
# (/usr/bin/time -v) of both, and their ratios.
# Usage: bench/csv_describe.sh [SIZE_MB]   (after scripts/build.sh and scripts/setup.sh --bench)
#   CSV=/path/to/file.csv reuses a file; KEEP=1 keeps the generated one.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${1:-1100}
nanguard=${NANGUARD:-build/nanguard}
[ -x "$nanguard" ] || { echo "csv_describe: $nanguard not built (scripts/build.sh)" >&2; exit 2; }
/usr/bin/python3 -c 'import pandas' 2>/dev/null || { echo "csv_describe: needs python3-pandas (scripts/setup.sh --bench)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "csv_describe: needs /usr/bin/time (Debian package time)" >&2; exit 2; }

work=$(mktemp -d /tmp/nanguard-csv-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
csv=${CSV:-}
if [ -z "$csv" ]; then
  csv=$work/bench.csv
  # A small C++ generator: 20 float columns and an integer label; 1% of the cells empty (missing),
  # 0.01% of them x1000 (outliers), a few NaN/inf words.
  cat > "$work/gen.cpp" <<'EOF'
#include <cstdio>
#include <cstdlib>
#include <random>
int main(int argc, char** argv) {
  const long long target = std::atoll(argv[1]) * 1000000LL;
  std::mt19937_64 rng(42);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  static char buf[1 << 20];
  std::setvbuf(stdout, buf, _IOFBF, sizeof buf);
  long long bytes = 0;
  bytes += std::printf("f0");
  for (int c = 1; c < 20; ++c) bytes += std::printf(",f%d", c);
  bytes += std::printf(",label\n");
  while (bytes < target) {
    for (int c = 0; c < 20; ++c) {
      if (c) bytes += std::printf(",");
      const double r = u(rng);
      if (r < 0.01) continue;  // missing
      if (r < 0.01002) { bytes += std::printf(r < 0.01001 ? "nan" : "inf"); continue; }
      double v = normal(rng) * (c + 1) + c * 10;
      if (r > 0.9999) v *= 1000;  // outlier
      bytes += std::printf("%.5f", v);
    }
    bytes += std::printf(",%d\n", static_cast<int>(u(rng) * 10));
  }
  return 0;
}
EOF
  c++ -O2 -o "$work/gen" "$work/gen.cpp"
  echo "== generating a ${size_mb} MB CSV in $work"
  "$work/gen" "$size_mb" > "$csv"
  if [ "${KEEP:-0}" = 1 ]; then cp "$csv" build/bench.csv && echo "kept as build/bench.csv"; fi
fi
bytes=$(stat -c %s "$csv")
echo "file: $csv, $(( bytes / 1000000 )) MB, $(( $(wc -l < "$csv") - 1 )) rows"

cat > "$work/pandas_describe.py" <<'EOF'
import sys, time
import pandas as pd
t = time.time()
df = pd.read_csv(sys.argv[1])
d = df.describe()
missing = df.isna().sum()
print(d.to_string(max_cols=6))
print("missing (incl. NaN):", int(missing.sum()))
print("pandas seconds: %.2f" % (time.time() - t))
EOF

# Runs a command under /usr/bin/time -v; prints its wall seconds and peak RSS in MB.
measure() {
  local name=$1; shift
  /usr/bin/time -v "$@" > "$work/$name.out" 2> "$work/$name.time"
  local wall rss cpu
  cpu=$(awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.2f", s }' "$work/$name.time")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; ++i) s = s * 60 + p[i]; print s }' "$work/$name.time")
  rss=$(awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$work/$name.time")
  echo "$wall $rss $cpu"
}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
# Warm the page cache for both (the first reader would otherwise pay for the disk).
cat "$csv" > /dev/null
echo "== nanguard data describe"
read -r ng_wall ng_rss ng_cpu < <(measure nanguard "$nanguard" data describe "$csv" --label-column label)
head -25 "$work/nanguard.out" | cut -c1-160
# Bounded memory: the same describe on the first tenth of the file.
head -n "$(( $(wc -l < "$csv") / 10 ))" "$csv" > "$work/tenth.csv"
read -r small_wall small_rss small_cpu < <(measure small "$nanguard" data describe "$work/tenth.csv" --label-column label)
rm -f "$work/tenth.csv"
echo "nanguard on a tenth of the file: $small_wall s, peak RSS $small_rss MB (full file: $ng_rss MB)"
echo "== pandas read_csv + describe"
read -r pd_wall pd_rss pd_cpu < <(measure pandas /usr/bin/python3 "$work/pandas_describe.py" "$csv")
tail -4 "$work/pandas.out"
echo "== result ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))"
echo "load average before/after: $load0 / $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v a="$ng_wall" -v b="$ng_rss" -v e="$ng_cpu" -v c="$pd_wall" -v d="$pd_rss" -v f="$pd_cpu" 'BEGIN {
  printf "nanguard data describe:   %7.2f s wall, %7.2f s CPU (user+sys), peak RSS %6d MB\n", a, e, b
  printf "pandas read_csv+describe: %7.2f s wall, %7.2f s CPU (user+sys), peak RSS %6d MB\n", c, f, d
  printf "nanguard: %.1fx faster (wall), %.1fx less CPU time, %.1fx less memory\n", c / a, f / e, d / b }'
