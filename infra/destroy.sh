#!/usr/bin/env bash
# Deletes the stack infra/deploy.sh made, and waits until it is gone. Idempotent: without
# the stack it says so and succeeds.
#
#   infra/destroy.sh --region R --stack-name S [--empty-bucket]
#
# CloudFormation cannot delete a bucket that holds objects: the message bucket must be
# empty first. destroy.sh refuses otherwise, unless --empty-bucket, which deletes every
# message body in it (mail still queued is lost). Kept after the stack is gone (their
# DeletionPolicy is Retain): the configuration tables, the two KMS keys and the two sending
# IPs (infra/README.md, "Removing the stack"); the artifacts bucket and ECR repository that
# deploy.sh made are kept too. AWS_ENDPOINT_URL, if set, points the AWS CLI at an emulator.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: infra/destroy.sh --region REGION --stack-name NAME [--empty-bucket]"
}

region="" stack="" empty_bucket=0
while (($#)); do
    case "$1" in
        --region) region=$2; shift 2 ;;
        --stack-name) stack=$2; shift 2 ;;
        --empty-bucket) empty_bucket=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "destroy.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[ -n "$region" ] && [ -n "$stack" ] || { usage >&2; exit 2; }
command -v aws >/dev/null || { echo "destroy.sh: the AWS CLI (aws) is needed" >&2; exit 1; }
export AWS_DEFAULT_REGION=$region AWS_REGION=$region AWS_PAGER=""
log() { echo "destroy.sh: $*" >&2; }

status=$(aws cloudformation describe-stacks --stack-name "$stack" \
    --query 'Stacks[0].StackStatus' --output text 2>/dev/null || true)
if [ -z "$status" ] || [ "$status" = DELETE_COMPLETE ]; then
    log "no stack $stack in $region: nothing to delete"
    exit 0
fi

bucket=$(aws cloudformation describe-stacks --stack-name "$stack" \
    --query "Stacks[0].Parameters[?ParameterKey=='BucketName'].ParameterValue | [0]" --output text)
if [ -n "$bucket" ] && [ "$bucket" != None ] && aws s3api head-bucket --bucket "$bucket" >/dev/null 2>&1; then
    objects=$(aws s3api list-objects-v2 --bucket "$bucket" --max-items 1 --query 'length(Contents || `[]`)' --output text)
    if [ "$objects" != 0 ]; then
        if ((empty_bucket)); then
            log "deleting every object in s3://$bucket"
            aws s3 rm "s3://$bucket" --recursive >/dev/null
        else
            log "s3://$bucket is not empty: messages may still be queued. Empty it"
            log "(aws s3 rm s3://$bucket --recursive) or pass --empty-bucket."
            exit 1
        fi
    fi
fi

log "deleting stack $stack in $region"
aws cloudformation delete-stack --stack-name "$stack"
aws cloudformation wait stack-delete-complete --stack-name "$stack"
log "stack $stack deleted (kept: configuration tables, KMS keys, sending IPs; see infra/README.md)"
