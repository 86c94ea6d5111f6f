#!/usr/bin/env bash
# Builds Baton's artifacts, uploads them and deploys infra/template.yaml as one stack.
# Idempotent: run it again with the same options and nothing changed, and nothing changes.
#
#   infra/deploy.sh --region R --stack-name S [--hostname H --bucket B --tls-secret-arn ARN]
#                   [--prefix P] [--artifacts DIR] [--image URI | --no-gateway]
#                   [--artifacts-bucket NAME] [--parameter Key=Value ...]
#
# Steps: (1) infra/package-functions.sh and infra/build-image.sh into a build directory, unless
# --artifacts DIR names one with <stage>.zip and baton-gateway.oci.tar already in it; (2) an
# artifacts bucket (made if missing) gets each zip under a key named by its content hash, so
# a function is updated exactly when its code changed; (3) the gateway image goes to the ECR
# repository <prefix>-gateway under a tag named by its content hash (podman; skipped when the
# tag is there, or with --image URI, which uses that image as it is); (4) `aws cloudformation
# deploy`; when the stack already has this template and these parameters, nothing at all.
# Parameters not given keep their value from the previous deploy (the template's default on
# the first). AWS_ENDPOINT_URL, if set, points the AWS CLI at an emulator (the tests do).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<'USAGE'
usage: infra/deploy.sh --region REGION --stack-name NAME [options]

  --hostname H            Hostname parameter: the relay's public DNS name (first deploy)
  --bucket B              BucketName parameter: the message-body bucket (first deploy)
  --tls-secret-arn ARN    TlsSecretArn: Secrets Manager secret {"cert": PEM, "key": PEM}
  --prefix P              Prefix parameter (default: baton, or the stack's current one)
  --artifacts DIR         use the zips and image archive in DIR instead of building them
  --image URI             use this gateway image as it is (no build, no push)
  --no-gateway            deploy without the gateway (GatewayImage empty)
  --artifacts-bucket NAME bucket for zips and template (default: <stack>-artifacts-<account>-<region>)
  --parameter Key=Value   any other template parameter, e.g. DeliveryMode=upstream (repeatable)
  -h, --help              this text
USAGE
}

region="" stack="" hostname="" bucket="" tls_secret="" prefix="" artifacts="" image=""
no_gateway=0 artifacts_bucket="" extra=()
while (($#)); do
    case "$1" in
        --region) region=$2; shift 2 ;;
        --stack-name) stack=$2; shift 2 ;;
        --hostname) hostname=$2; shift 2 ;;
        --bucket) bucket=$2; shift 2 ;;
        --tls-secret-arn) tls_secret=$2; shift 2 ;;
        --prefix) prefix=$2; shift 2 ;;
        --artifacts) artifacts=$2; shift 2 ;;
        --image) image=$2; shift 2 ;;
        --no-gateway) no_gateway=1; shift ;;
        --artifacts-bucket) artifacts_bucket=$2; shift 2 ;;
        --parameter) extra+=("$2"); shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "deploy.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[ -n "$region" ] && [ -n "$stack" ] || { usage >&2; exit 2; }
if [ -n "$image" ] && ((no_gateway)); then
    echo "deploy.sh: --image and --no-gateway exclude each other" >&2
    exit 2
fi
command -v aws >/dev/null || { echo "deploy.sh: the AWS CLI (aws) is needed" >&2; exit 1; }
export AWS_DEFAULT_REGION=$region AWS_REGION=$region AWS_PAGER=""

log() { echo "deploy.sh: $*" >&2; }
sha() { sha256sum "$1" | cut -c1-16; }

# The stack's current value of a parameter, or "" (no stack yet, or no such parameter).
current_parameter() {
    aws cloudformation describe-stacks --stack-name "$stack" \
        --query "Stacks[0].Parameters[?ParameterKey=='$1'].ParameterValue | [0]" \
        --output text 2>/dev/null | grep -v '^None$' || true
}
[ -n "$prefix" ] || prefix=$(current_parameter Prefix)
[ -n "$prefix" ] || prefix=baton

# ------------------------------------------------------------------------ 1. artifacts
stages=(policy sign deliver bounce events fused api)
if [ -z "$artifacts" ]; then
    artifacts=$(mktemp -d)
    trap 'rm -rf "$artifacts"' EXIT
    log "building the function zips into $artifacts"
    infra/package-functions.sh "$artifacts"
    if [ -z "$image" ] && ! ((no_gateway)); then
        log "building the gateway image into $artifacts"
        infra/build-image.sh "$artifacts"
    fi
fi
for s in "${stages[@]}"; do
    [ -f "$artifacts/$s.zip" ] || { log "missing $artifacts/$s.zip"; exit 1; }
done

# ------------------------------------------------------------------------ 2. artifacts bucket
account=$(aws sts get-caller-identity --query Account --output text)
[ -n "$artifacts_bucket" ] || artifacts_bucket="$stack-artifacts-$account-$region"
if ! aws s3api head-bucket --bucket "$artifacts_bucket" >/dev/null 2>&1; then
    log "creating bucket $artifacts_bucket"
    if [ "$region" = us-east-1 ]; then
        aws s3api create-bucket --bucket "$artifacts_bucket" >/dev/null
    else
        aws s3api create-bucket --bucket "$artifacts_bucket" \
            --create-bucket-configuration "LocationConstraint=$region" >/dev/null
    fi
    aws s3api put-public-access-block --bucket "$artifacts_bucket" --public-access-block-configuration \
        BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
fi

declare -A code_param=([policy]=PolicyCodeKey [sign]=SignCodeKey [deliver]=DeliverCodeKey
    [bounce]=BounceCodeKey [events]=EventsCodeKey [fused]=FusedCodeKey [api]=ApiCodeKey)
params=()
for s in "${stages[@]}"; do
    key="functions/$s-$(sha "$artifacts/$s.zip").zip"
    if ! aws s3api head-object --bucket "$artifacts_bucket" --key "$key" >/dev/null 2>&1; then
        log "uploading s3://$artifacts_bucket/$key"
        aws s3api put-object --bucket "$artifacts_bucket" --key "$key" --body "$artifacts/$s.zip" >/dev/null
    fi
    params+=("${code_param[$s]}=$key")
done
params+=("FunctionCodeBucket=$artifacts_bucket" "Prefix=$prefix")

# ------------------------------------------------------------------------ 3. gateway image
if ((no_gateway)); then
    params+=("GatewayImage=")
elif [ -n "$image" ]; then
    params+=("GatewayImage=$image")
else
    archive="$artifacts/baton-gateway.oci.tar"
    [ -f "$archive" ] || { log "missing $archive (or pass --image URI / --no-gateway)"; exit 1; }
    command -v podman >/dev/null || { log "podman is needed to push the gateway image"; exit 1; }
    repo="$prefix-gateway"
    tag=$(sha "$archive")
    if ! aws ecr describe-repositories --repository-names "$repo" >/dev/null 2>&1; then
        log "creating ECR repository $repo"
        aws ecr create-repository --repository-name "$repo" \
            --image-scanning-configuration scanOnPush=true >/dev/null
    fi
    registry="$account.dkr.ecr.$region.amazonaws.com"
    uri="$registry/$repo:$tag"
    if ! aws ecr describe-images --repository-name "$repo" --image-ids "imageTag=$tag" >/dev/null 2>&1; then
        log "pushing $uri"
        loaded=$(podman load -q -i "$archive" | sed -n 's/^Loaded image[^:]*: *//p' | tail -n1)
        [ -n "$loaded" ] || { log "podman load $archive named no image"; exit 1; }
        podman tag "$loaded" "$uri"
        aws ecr get-login-password | podman login --username AWS --password-stdin "$registry" >/dev/null
        podman push "$uri"
    fi
    params+=("GatewayImage=$uri")
fi

# ------------------------------------------------------------------------ 4. the stack
[ -z "$hostname" ] || params+=("Hostname=$hostname")
[ -z "$bucket" ] || params+=("BucketName=$bucket")
[ -z "$tls_secret" ] || params+=("TlsSecretArn=$tls_secret")
params+=("${extra[@]}")

# Nothing to do when the stack already runs this template with these parameters (the
# change set would be empty; checked here so a rerun costs no change set at all).
unchanged() {
    local status current key value p
    status=$(aws cloudformation describe-stacks --stack-name "$stack" \
        --query 'Stacks[0].StackStatus' --output text 2>/dev/null) || return 1
    case "$status" in CREATE_COMPLETE | UPDATE_COMPLETE | UPDATE_ROLLBACK_COMPLETE) ;; *) return 1 ;; esac
    current=$(aws cloudformation get-template --stack-name "$stack" --template-stage Original \
        --query TemplateBody --output text) || return 1
    [ "$(printf '%s' "$current" | sha256sum)" = "$(printf '%s' "$(cat infra/template.yaml)" | sha256sum)" ] || return 1
    declare -A have=()
    while IFS=$'\t' read -r key value; do
        [ "$value" = None ] && value=""
        have[$key]=$value
    done < <(aws cloudformation describe-stacks --stack-name "$stack" \
        --query 'Stacks[0].Parameters[].[ParameterKey,ParameterValue]' --output text)
    for p in "${params[@]}"; do
        key=${p%%=*} value=${p#*=}
        [ "${have[$key]-__unset__}" = "$value" ] || return 1
    done
}
if unchanged; then
    log "stack $stack is up to date: nothing to deploy"
else
    log "deploying stack $stack in $region"
    aws cloudformation deploy \
        --stack-name "$stack" \
        --template-file infra/template.yaml \
        --s3-bucket "$artifacts_bucket" --s3-prefix templates \
        --capabilities CAPABILITY_NAMED_IAM \
        --no-fail-on-empty-changeset \
        --parameter-overrides "${params[@]}"
fi

aws cloudformation describe-stacks --stack-name "$stack" --query 'Stacks[0].Outputs' --output table
