#!/usr/bin/env bash
# Stops what start.sh started (same LOCALSTACK_PORT / DYNAMODB_PORT). stop.sh [all|localstack|dynamodb]
set -euo pipefail
source "$(dirname "$0")/env.sh"
what=${1:-all}
stop() {
    local pidfile=$LOCALSTACK_STATE_DIR/$1.pid
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile")
    # setsid made it a process group leader: stop the whole group.
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$pidfile"
}
if [ "$what" = all ] || [ "$what" = localstack ]; then stop localstack; fi
if [ "$what" = all ] || [ "$what" = dynamodb ]; then stop dynamodb; fi
