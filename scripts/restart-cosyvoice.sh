#!/bin/sh
# Restarts one CosyVoice FastAPI server (runtime/python/fastapi/server.py); meant as a cosygate
# `backends[].restart.command`. It stops the old process by its pid file (TERM, then KILL after
# STOP_WAIT seconds), starts a new one in the background with nohup, writes the new pid file and
# exits 0 at once: cosygate then waits for the health checks, not for this script.
#
#   restart-cosyvoice.sh PORT MODEL_DIR
#
# Environment: COSYVOICE_HOME  the CosyVoice checkout (default /opt/CosyVoice)
#              RUN_DIR         pid and log files (default /var/run/cosyvoice, or /tmp)
#              PYTHON          the interpreter of CosyVoice's environment (default python3)
#              STOP_WAIT       seconds to wait after TERM before KILL (default 20)
#
# Example (cosygate.yaml):
#   restart:
#     command: ["/opt/cosygate/scripts/restart-cosyvoice.sh", "50000", "pretrained_models/Fun-CosyVoice3-0.5B"]
#     env: { COSYVOICE_HOME: /opt/CosyVoice, PYTHON: /opt/conda/envs/cosyvoice/bin/python }
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 PORT MODEL_DIR" >&2
    exit 2
fi
PORT=$1
MODEL_DIR=$2
COSYVOICE_HOME=${COSYVOICE_HOME:-/opt/CosyVoice}
PYTHON=${PYTHON:-python3}
STOP_WAIT=${STOP_WAIT:-20}
if [ -z "${RUN_DIR:-}" ]; then
    RUN_DIR=/var/run/cosyvoice
    mkdir -p "$RUN_DIR" 2>/dev/null || RUN_DIR=/tmp
fi
mkdir -p "$RUN_DIR"
PIDFILE="$RUN_DIR/cosyvoice-$PORT.pid"
LOG="$RUN_DIR/cosyvoice-$PORT.log"

# A zombie counts as gone.
alive() {
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)
    [ -n "$state" ] && [ "$state" != Z ]
}

if [ -f "$PIDFILE" ]; then
    PID=$(cat "$PIDFILE")
    if [ -n "$PID" ] && alive "$PID"; then
        echo "stopping CosyVoice on port $PORT (pid $PID)"
        kill -TERM "$PID" 2>/dev/null || true
        i=0
        while alive "$PID" && [ "$i" -lt $((STOP_WAIT * 10)) ]; do
            sleep 0.1
            i=$((i + 1))
        done
        if alive "$PID"; then
            echo "pid $PID ignored TERM for ${STOP_WAIT}s; killing it"
            kill -KILL "$PID" 2>/dev/null || true
            sleep 0.5
        fi
    fi
    rm -f "$PIDFILE"
fi

cd "$COSYVOICE_HOME"
nohup "$PYTHON" runtime/python/fastapi/server.py --port "$PORT" --model_dir "$MODEL_DIR" \
    >>"$LOG" 2>&1 </dev/null &
echo $! >"$PIDFILE"
echo "started CosyVoice on port $PORT with pid $! (model $MODEL_DIR, log $LOG)"
