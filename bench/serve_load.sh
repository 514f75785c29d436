#!/usr/bin/env bash
# Load test of emo-serve on loopback: start it (demo model unless EMO_SERVE_ARGS says otherwise), send REQUESTS
# renders from CLIENTS concurrent clients (a 429 is retried after its Retry-After, at most MAX_WAIT=30 s), write
# the summary JSON under bench/results/, stop the server.
#   bench/serve_load.sh [REQUESTS=96] [CLIENTS=16] [REPLICAS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${1:-96} CLIENTS=${2:-16} REPLICAS=${3:-2}
PORT=${PORT:-8765}
FORM=${FORM:-'{"size": 64, "steps": 1, "frames_per_clip": 4}'}
OUT="bench/results/serve-load-$(date +%Y%m%d-%H%M%S).json"
IMAGE=$(python -c 'from importlib import resources; print(resources.files("emo") / "assets" / "portrait.jpg")')
AUDIO=$(python -c 'from importlib import resources; print(resources.files("emo") / "assets" / "speech.wav")')
LOG=$(mktemp)
emo-serve ${EMO_SERVE_ARGS:---demo} --replicas "$REPLICAS" --port "$PORT" >"$LOG" 2>&1 &
SERVER=$!
trap 'kill -INT $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -f "$LOG"' EXIT
for _ in $(seq 240); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    kill -0 $SERVER 2>/dev/null || { cat "$LOG"; exit 1; }
    sleep 1
done
python bench/loadgen.py "$IMAGE" "$AUDIO" --url "http://127.0.0.1:$PORT" --requests "$REQUESTS" \
    --clients "$CLIENTS" --form "$FORM" --max-wait "${MAX_WAIT:-30}" --out "$OUT"
echo "wrote $OUT"
