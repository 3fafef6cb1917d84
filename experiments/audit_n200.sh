#!/bin/bash
# Held-out clean zoo models (and two held-out facades) audited at the CLI default n=200 (calibration is at n=40)
set -u
cd "$(dirname "$0")/.."
mkdir -p runs/audit200
for m in sst2_s1_16k:sst2 rte_s1:rte lstm_s0:sst2 roberta_scratch_s0:sst2 distilbert_scratch_s0:sst2 minilm4_s0:sst2 bert_scratch_s1:sst2 rp_s0:sst2 unmerged_stop:sst2 unmerged_first:sst2; do
  name=${m%%:*}; data=${m##*:}
  [ -f runs/audit200/$name.json ] && continue
  start=$(date +%s)
  .venv/bin/unmask audit runs/zoo/$name --data $data --n 200 --threads 2 --quiet --json runs/audit200/$name.json.tmp > runs/audit200/$name.txt 2>&1 && mv runs/audit200/$name.json.tmp runs/audit200/$name.json
  echo "$name $(( $(date +%s) - start )) s" >> runs/audit200/times.log
done
