#!/usr/bin/env bash
# Starts LocalStack (S3, SQS) and DynamoDB Local on this host, without Docker, and waits until
# both answer. Idempotent: what is already running is left alone.
#   LOCALSTACK_PORT (4566), DYNAMODB_PORT (8000), LOCALSTACK_STATE_DIR choose where.
#   start.sh [all|localstack|dynamodb]
set -euo pipefail
source "$(dirname "$0")/env.sh"
what=${1:-all}
mkdir -p "$LOCALSTACK_STATE_DIR"

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # name url seconds
    local deadline=$((SECONDS + $3))
    until curl -fsS -o /dev/null "$2" 2>/dev/null; do
        if ((SECONDS > deadline)) || ! running "$LOCALSTACK_STATE_DIR/$1.pid"; then
            echo "$1 did not answer at $2 within $3 s; log: $LOCALSTACK_STATE_DIR/$1.log" >&2
            tail -20 "$LOCALSTACK_STATE_DIR/$1.log" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
}

if [ "$what" = all ] || [ "$what" = localstack ]; then
    pidfile=$LOCALSTACK_STATE_DIR/localstack.pid
    if ! running "$pidfile"; then
        # DNS_ADDRESS=0: no DNS server of its own (port 53 is not ours to take).
        # SQS_ENDPOINT_STRATEGY=path: queue URLs on the gateway address, which resolves offline.
        GATEWAY_LISTEN=127.0.0.1:$LOCALSTACK_PORT \
            SERVICES=s3,sqs,events \
            EAGER_SERVICE_LOADING=1 \
            DNS_ADDRESS=0 \
            SQS_ENDPOINT_STRATEGY=path \
            SKIP_SSL_CERT_DOWNLOAD=1 \
            DISABLE_EVENTS=1 \
            LOCALSTACK_VOLUME_DIR=$LOCALSTACK_STATE_DIR/volume \
            TMPDIR=$LOCALSTACK_STATE_DIR \
            setsid "$LOCALSTACK_DIR/.venv/bin/python" -m localstack.runtime.main \
            >"$LOCALSTACK_STATE_DIR/localstack.log" 2>&1 </dev/null &
        echo $! >"$pidfile"
    fi
fi

if [ "$what" = all ] || [ "$what" = dynamodb ]; then
    pidfile=$LOCALSTACK_STATE_DIR/dynamodb.pid
    if ! running "$pidfile"; then
        jar=$LOCALSTACK_DIR/.dynamodb/jar
        # It writes a metadata file into its working directory: keep that in the state dir.
        cd "$LOCALSTACK_STATE_DIR"
        setsid java -Xmx512m -Djava.library.path="$jar/DynamoDBLocal_lib" -jar "$jar/DynamoDBLocal.jar" \
            -inMemory -port "$DYNAMODB_PORT" \
            >"$LOCALSTACK_STATE_DIR/dynamodb.log" 2>&1 </dev/null &
        echo $! >"$pidfile"
        cd - >/dev/null
    fi
fi

if [ "$what" = all ] || [ "$what" = localstack ]; then
    wait_for localstack "http://127.0.0.1:$LOCALSTACK_PORT/_localstack/health" 90
fi
if [ "$what" = all ] || [ "$what" = dynamodb ]; then
    # DynamoDB Local answers 400 to a bare GET once it is up; curl -f would call that failure.
    deadline=$((SECONDS + 60))
    until curl -sS -o /dev/null "http://127.0.0.1:$DYNAMODB_PORT/" 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "DynamoDB Local did not start" >&2; tail -20 "$LOCALSTACK_STATE_DIR/dynamodb.log" >&2; exit 1; }
        sleep 0.2
    done
fi
echo "LocalStack on http://127.0.0.1:$LOCALSTACK_PORT, DynamoDB Local on http://127.0.0.1:$DYNAMODB_PORT"
