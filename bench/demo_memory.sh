#!/bin/bash
# Peak memory of `unmask demo` per process (issue 15.3: <= 2.5 GB on 2 cores).
#   bash bench/demo_memory.sh WORKDIR OUT_PREFIX
# Runs `/usr/bin/time -v unmask demo --workdir WORKDIR` (remove WORKDIR first for a first run) and samples
# the resident set of every process in its tree every 0.5 s into OUT_PREFIX.rss ("epoch pid:KiB ...");
# the demo's output goes to OUT_PREFIX.stdout; the per-process peaks are printed at the end.
set -u
work=$1; out=$2
lscpu | grep -E "Model name|Flags" > "$out.lscpu"
/usr/bin/time -v unmask demo --workdir "$work" > "$out.stdout" 2>&1 &
pid=$!
tree() { local p=$1; echo "$p"; for c in $(pgrep -P "$p"); do tree "$c"; done; }
while kill -0 "$pid" 2>/dev/null; do
  line=""
  for p in $(tree "$pid"); do
    v=$(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null)
    [ -n "$v" ] && line="$line $p:$v"
  done
  echo "$(date +%s)$line" >> "$out.rss"
  sleep 0.5
done
wait "$pid"; rc=$?
python3 - "$out.rss" <<'PY'
import sys
peak = {}
for row in open(sys.argv[1]):
    for item in row.split()[1:]:
        pid, kib = item.split(":")
        peak[pid] = max(peak.get(pid, 0), int(kib))
for pid, kib in sorted(peak.items(), key=lambda kv: -kv[1]):
    print(f"pid {pid}: peak RSS {kib / 2**20:.2f} GiB")
PY
grep -E "Maximum resident|Elapsed" "$out.stdout"
exit $rc
