#!/usr/bin/env bash
# Runs every benchmark in turn (each with its defaults, or the environment's overrides, see
# each script), keeps the text output, collects every RESULT line into a CSV and draws it.
#
#   bench/run-all.sh [--only NAME,NAME,...] [--list]
#
# Writes, under bench/results/ (git-ignored), for the run's UTC time T:
#   T.txt  the scripts' output as printed
#   T.csv  script,metric,unit,baton,other,other_name,better,baton_rounds,other_rounds
#          (one row per RESULT line, see bench_result in bench/lib.sh)
#   T.png  one panel per metric, Baton next to the other side, the ratio on each panel
#          (bench/chart.py, matplotlib in .venv-bench)
# and copies them to latest.txt, latest.csv, latest.png.
# A failing benchmark does not stop the others: it is listed at the end and the exit status
# is 1. ROUNDS (default 3) is the number of rounds of accept.sh and api.sh.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
export ROUNDS=${ROUNDS:-3}

# name | command (relative to the repo root) | what it measures
BENCHES=(
    "accept|bench/accept.sh --rounds $ROUNDS|accept rate and server CPU with the pipeline relaying to a sink, new connection per message"
    "accept-reuse|bench/accept.sh --rounds $ROUNDS --reuse|the same, one connection per session (smtp-source -d)"
    "relay|bench/relay.sh|relayed msgs/s, signed, vs Postfix and Postfix+OpenDKIM"
    "idle|bench/idle-rss.sh --with-postfix|memory per 1,000 idle plaintext sessions"
    "idle-tls|bench/idle-rss.sh --tls --with-postfix|memory per 1,000 idle TLS sessions"
    "large|bench/large-rss.sh|peak RSS growth while 4 x 25 MB messages are relayed"
    "soak|bench/soak.sh|100,000-message soak to the test MX"
    "aws-accept|bench/aws-accept.sh|AWS backend on LocalStack vs raw PutObject+SendMessage"
    "aws-requests|bench/aws-requests.sh|AWS requests per delivered message, per-stage functions"
    "aws-requests-fused|bench/aws-requests.sh --fused|AWS requests per delivered message, fused function"
    "api|bench/api.sh|SES v2 API sends/s next to SMTP"
    "lambda|bench/lambda.sh|Lambda zip sizes and start times"
)

ONLY=""
while (($#)); do
    case $1 in
        --only) ONLY=$2; shift 2 ;;
        --list) for b in "${BENCHES[@]}"; do IFS='|' read -r n c d <<<"$b"; printf '%-13s %-45s %s\n' "$n" "$c" "$d"; done; exit 0 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
if [[ -n $ONLY ]]; then
    for n in ${ONLY//,/ }; do
        found=0
        for b in "${BENCHES[@]}"; do [[ ${b%%|*} == "$n" ]] && found=1; done
        ((found)) || die "unknown benchmark '$n' (bench/run-all.sh --list)"
    done
fi

RES="$ROOT/bench/results"
mkdir -p "$RES"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
TXT="$RES/$STAMP.txt" CSV="$RES/$STAMP.csv" PNG="$RES/$STAMP.png"
FAILED=() SKIPPED=()
: >"$TXT"
echo "== bench/run-all.sh $STAMP, $(nproc) cores, kernel $(uname -r), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)" | tee -a "$TXT"

for b in "${BENCHES[@]}"; do
    IFS='|' read -r name cmd desc <<<"$b"
    if [[ -n $ONLY && ",$ONLY," != *",$name,"* ]]; then continue; fi
    script=${cmd%% *}
    if [[ ! -f $ROOT/$script ]]; then
        echo "### $name: $script not present, skipped" | tee -a "$TXT"
        SKIPPED+=("$name")
        continue
    fi
    {
        echo
        echo "### $name: $cmd ($desc)"
    } | tee -a "$TXT"
    # shellcheck disable=SC2086  # the command line splits on purpose
    (cd "$ROOT" && bash $cmd) 2>&1 | tee -a "$TXT"
    rc=${PIPESTATUS[0]}
    if ((rc != 0)); then
        echo "### $name FAILED (exit $rc)" | tee -a "$TXT"
        FAILED+=("$name")
    fi
done

{
    echo "script,metric,unit,baton,other,other_name,better,baton_rounds,other_rounds"
    grep '^RESULT,' "$TXT" | cut -d, -f2-
} >"$CSV"
ROWS=$(($(wc -l <"$CSV") - 1))

# The chart: matplotlib in .venv-bench (bench/bounce-compare.sh makes the same venv).
VENV="$ROOT/.venv-bench"
chart() {
    if [[ ! -x $VENV/bin/python ]]; then
        python3 -m venv "$VENV" || return 1
    fi
    if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
        log "installing matplotlib into .venv-bench"
        "$VENV/bin/pip" install -q --disable-pip-version-check matplotlib >&2 || return 1
    fi
    "$VENV/bin/python" "$ROOT/bench/chart.py" "$CSV" "$PNG"
}
if ((ROWS > 0)); then
    chart || { echo "chart: bench/chart.py failed" | tee -a "$TXT"; FAILED+=(chart); }
fi

{
    echo
    echo "== summary $STAMP"
    echo "results: $ROWS rows in $CSV"
    [[ -f $PNG ]] && echo "chart:   $PNG"
    ((${#SKIPPED[@]})) && echo "skipped (script not present): ${SKIPPED[*]}"
    ((${#FAILED[@]})) && echo "FAILED: ${FAILED[*]}"
} | tee -a "$TXT"

cp "$TXT" "$RES/latest.txt"
cp "$CSV" "$RES/latest.csv"
if [[ -f $PNG ]]; then cp "$PNG" "$RES/latest.png"; else rm -f "$RES/latest.png"; fi
((${#FAILED[@]} == 0))
