#!/usr/bin/env bash
# How long Flower/Ray processes outlive a `kill -9` of `pollen simulate` (pollen/deploy/reaper.py's guard).
# Usage: bash bench/kill_cleanup.sh   (a tiny run, killed once a Ray client actor is training; prints
# the Flower/Ray processes alive before the kill and the time until none is left)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(mktemp -d)
.venv/bin/pollen simulate --model minilm-l6 --dataset tweets --clients 2 --rounds 3 \
  --set data.max_client_examples=32 --set data.eval_size=32 --set train.local_steps=2 \
  --set model.max_length=32 --out "$OUT/run" >"$OUT/log" 2>&1 &
PID=$!
PATTERN='flwr|flower-|ray::|raylet|gcs_server|pollen/deploy/reaper.py|ray/dashboard|ray/autoscaler|log_monitor'
tree() { ps -eo pid=,args= | grep -E "$PATTERN" | grep -v grep | grep -c "" || true; }
for _ in $(seq 240); do ps -eo args= | grep -q '^ray::ClientAppActor' && break; sleep 0.5; done
sleep 2
echo "Flower/Ray processes before kill -9 of pollen ($PID): $(tree)"
ps -eo args= | grep -E "$PATTERN" | grep -v grep | awk '{print "  " $1}' | sort | uniq -c
kill -9 "$PID"
T0=$(date +%s.%N)
while [ "$(tree)" -gt 0 ]; do
  sleep 0.5
  if (( $(echo "$(date +%s.%N) - $T0 > 60" | bc) )); then echo "still alive after 60 s:"; ps -eo pid,args | grep -E 'flwr|ray::|raylet|gcs_server' | grep -v grep; exit 1; fi
done
printf 'all gone %.1f s after kill -9 (polled every 0.5 s)\n' "$(echo "$(date +%s.%N) - $T0" | bc)"
