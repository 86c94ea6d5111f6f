#!/usr/bin/env bash
# Exit 0 when LocalStack's S3 and SQS and DynamoDB Local answer.
set -euo pipefail
source "$(dirname "$0")/env.sh"
curl -fsS "http://127.0.0.1:$LOCALSTACK_PORT/_localstack/health" | grep -q '"sqs": "\(running\|available\)"'
curl -sS -o /dev/null "http://127.0.0.1:$DYNAMODB_PORT/"
