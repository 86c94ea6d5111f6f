# Sourced by the scripts here: where things run. Override any of these in the environment.
LOCALSTACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOCALSTACK_PORT=${LOCALSTACK_PORT:-4566}
DYNAMODB_PORT=${DYNAMODB_PORT:-8000}
# One state directory per pair of ports, so tests can run a private instance beside another.
LOCALSTACK_STATE_DIR=${LOCALSTACK_STATE_DIR:-$LOCALSTACK_DIR/.run/$LOCALSTACK_PORT-$DYNAMODB_PORT}
