# shellcheck shell=bash
# Shared helpers for the Baton benchmarks (sourced by accept.sh, idle-rss.sh).
# Everything here talks to 127.0.0.1 only.

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# now: seconds since the epoch with nanoseconds, for wall-clock timing.
now() { date +%s.%N; }

# ensure_tools: install Postfix (smtp-source/smtp-sink come with it), swaks and
# python3 if any are missing. Postfix is installed as "No configuration" and its
# system instance is never started by us.
ensure_tools() {
    local missing=()
    command -v smtp-source >/dev/null 2>&1 || [[ -x /usr/sbin/smtp-source ]] || missing+=(postfix)
    command -v postfix >/dev/null 2>&1 || [[ -x /usr/sbin/postfix ]] || missing+=(postfix)
    command -v swaks >/dev/null 2>&1 || missing+=(swaks)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    command -v ss >/dev/null 2>&1 || missing+=(iproute2)
    if ((${#missing[@]})); then
        log "installing missing packages: ${missing[*]}"
        [[ $(id -u) -eq 0 ]] || die "need root to apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # Keep a freshly installed system postfix from configuring/starting a port-25 daemon.
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    export PATH="$PATH:/usr/sbin:/sbin"
}

# free_port: a currently unused TCP port on 127.0.0.1.
free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# wait_port PORT [TIMEOUT_S]: wait until something accepts on 127.0.0.1:PORT.
wait_port() {
    local port=$1 timeout=${2:-30} i
    for ((i = 0; i < timeout * 10; i++)); do
        if python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1',$port),0.5); s.close()" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- Baton

# baton_bin: path of the release binary; builds it when missing (never while
# another cargo is running, unless BATON_BUILD_WAIT=0).
baton_bin() {
    local root=$1 bin="$1/target/release/baton"
    if [[ -n ${BATON_BIN:-} ]]; then
        [[ -x $BATON_BIN ]] || die "BATON_BIN=$BATON_BIN is not executable"
        echo "$BATON_BIN"; return
    fi
    if [[ ! -x $bin ]]; then
        command -v cargo >/dev/null 2>&1 || die "$bin missing and no cargo to build it"
        local waited=0
        while [[ ${BATON_BUILD_WAIT:-1} == 1 ]] && pgrep -x cargo >/dev/null 2>&1; do
            ((waited == 0)) && log "another cargo is running; waiting before building baton"
            waited=1; sleep 10
        done
        log "building baton: cargo build --release -p baton"
        (cd "$root" && cargo build --release -p baton >&2) || die "cargo build --release -p baton failed"
    fi
    [[ -x $bin ]] || die "$bin not found after build"
    echo "$bin"
}

# baton_write_config FILE DATA_DIR RELAY_PORT MAX_PER_IP
baton_write_config() {
    local cfg=$1 data=$2 port=$3 per_ip=$4
    cat >"$cfg" <<EOF
hostname = "baton.bench.localhost"
data_dir = "$data"

[listen]
submission  = ""
submissions = ""
relay       = "127.0.0.1:$port"

[relay]
accept_domains = []
allow_networks = ["127.0.0.0/8"]

[limits]
max_connections        = 20000
max_connections_per_ip = $per_ip

# Accept only, like Postfix's HOLD on the other side: the pipeline would otherwise try to
# deliver to the bench's .invalid recipients and take CPU from the measurement.
[pipeline]
run_stages = false
EOF
}

# baton_relay_config FILE DATA_DIR RELAY_PORT SINK_PORT NETWORKS FUSED WORKERS [EXTRA]: a
# relay that runs its pipeline and delivers everything to the sink on SINK_PORT (relay.sh,
# profile.sh). NETWORKS is the body of [relay] (allow_networks, or tenant_networks to sign);
# EXTRA, more TOML appended as it is.
baton_relay_config() {
    local cfg=$1 data=$2 port=$3 sink=$4 networks=$5 fused=$6 workers=$7 extra=${8:-}
    cat >"$cfg" <<EOF
hostname = "baton.bench.localhost"
data_dir = "$data"
[listen]
submission = ""
submissions = ""
relay = "127.0.0.1:$port"
[relay]
$networks
[limits]
max_connections_per_ip = 1000
[log]
filter = "warn"
[pipeline]
run_stages = true
fused = $fused
deliver_workers = $workers
[[delivery.routes]]
pattern = "*"
target = "127.0.0.1:$sink"
$extra
EOF
}

# wait_sink_files LABEL DIR N: until the sink (one file per message) holds N messages, at
# most 300 s.
wait_sink_files() {
    local n i
    for ((i = 0; i < 6000; i++)); do
        n=$(find "$2" -type f | wc -l)
        ((n >= $3)) && return 0
        sleep 0.05
    done
    die "$1: only $n of $3 reached the sink"
}

# baton_start BIN CFG LOGFILE: starts "baton --config CFG serve" in the
# background, sets BATON_PID, waits for the relay port.
baton_start() {
    local bin=$1 cfg=$2 logf=$3 port=$4
    "$bin" --config "$cfg" serve >"$logf" 2>&1 &
    BATON_PID=$!
    if ! wait_port "$port" 30; then
        tail -n 30 "$logf" >&2 || true
        die "baton did not listen on 127.0.0.1:$port within 30s"
    fi
    kill -0 "$BATON_PID" 2>/dev/null || { tail -n 30 "$logf" >&2; die "baton exited"; }
}

# baton_stop: SIGTERM, then SIGKILL after 15 s.
baton_stop() {
    local pid=${BATON_PID:-}
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    BATON_PID=
}

# baton_count BIN CFG: number of messages in Baton's queue (all states).
baton_count() {
    "$1" --config "$2" queue list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}

# ---------------------------------------------------------------- Postfix

# postfix_setup DIR PORT: writes a private Postfix instance under DIR
# (DIR/etc = config_directory, DIR/queue = queue_directory, DIR/data =
# data_directory). smtpd listens on 127.0.0.1:PORT only. Every accepted message
# is put on HOLD by smtpd (access action HOLD): cleanup writes and fsyncs the
# queue file exactly as for a normal message, then files it in the hold queue,
# which the queue manager never schedules, so nothing is delivered.
postfix_setup() {
    local dir=$1 port=$2
    mkdir -p "$dir/etc" "$dir/queue" "$dir/data"
    chmod 755 "$dir" "$dir/etc"
    chmod o+x "$(dirname "$dir")"   # daemons open data_directory files as mail_owner
    chown postfix:postfix "$dir/data"; chmod 700 "$dir/data"
    cat >"$dir/etc/main.cf" <<EOF
# Private benchmark instance; not the system Postfix.
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.localhost
mydomain = bench.localhost
myorigin = \$myhostname
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
relayhost =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = $dir/maillog
biff = no

# The run must not deliver anything: smtpd marks each message HOLD, cleanup
# files the (fsynced) queue file in the hold queue. defer_transports is a
# second fence in case anything ever reaches the active queue.
smtpd_client_restrictions = check_client_access static:HOLD
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
defer_transports = smtp, relay, local, virtual, lmtp, error, retry, discard

# Let 50+ sessions run in parallel and remove throttles Baton does not have.
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_event_limit_exceptions = 127.0.0.0/8
# in_flow_delay throttles cleanup when arrivals outpace deliveries (tokens come
# from the queue manager); nothing is delivered in this run, so it would only
# sleep. Baton has no equivalent throttle.
in_flow_delay = 0
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtpd_tls_security_level = none
smtp_tls_security_level = none
message_size_limit = 52428800
smtpd_banner = \$myhostname ESMTP
EOF
    cat >"$dir/etc/master.cf" <<EOF
127.0.0.1:$port inet n  -       n       -       -       smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

postfix_start() {
    local dir=$1
    postfix -c "$dir/etc" check >&2 || die "postfix check failed for $dir/etc"
    postfix -c "$dir/etc" start >&2 || { tail -n 30 "$dir/maillog" >&2 || true; die "postfix start failed"; }
    POSTFIX_DIR=$dir
}

postfix_stop() {
    local dir=${POSTFIX_DIR:-}
    [[ -n $dir ]] || return 0
    postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
    local pidf="$dir/queue/pid/master.pid" pid i
    if [[ -f $pidf ]]; then
        pid=$(tr -dc 0-9 <"$pidf")
        for ((i = 0; i < 100; i++)); do
            [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true
    fi
    POSTFIX_DIR=
}

# postfix_master_pid DIR: the PID of the instance's master process.
postfix_master_pid() { tr -dc 0-9 <"$1/queue/pid/master.pid"; }

# postfix_count DIR: queue files in any queue (incoming/active/deferred/hold/maildrop).
postfix_count() {
    local q=$1/queue d n=0
    for d in incoming active deferred hold maildrop; do
        [[ -d $q/$d ]] && n=$((n + $(find "$q/$d" -type f | wc -l)))
    done
    echo "$n"
}

# postfix_delivered DIR: number of delivery attempts in the log (must stay 0).
postfix_delivered() {
    grep -cE ' (status=(sent|bounced|deferred))' "$1/maillog" 2>/dev/null || true
}

# cpu_ticks PID: CPU clock ticks used by PID, its live children, and its reaped
# children (utime+stime+cutime+cstime of each). For Postfix pass the master:
# smtpd/cleanup processes are its direct children.
cpu_ticks() {
    local pid=$1 p total=0 f
    for p in "$pid" $(pgrep -P "$pid" 2>/dev/null || true); do
        f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        f=${f##*) }   # fields after "comm", starting at field 3 (state)
        # utime..cstime are fields 14..17, i.e. 12..15 here
        total=$((total + $(awk '{print $12 + $13 + $14 + $15}' <<<"$f")))
    done
    echo "$total"
}

# ---------------------------------------------------------------- smtp-sink (the test MX)

# start_sink DIR [BACKLOG]: a Postfix smtp-sink on a free port dumping each message into
# DIR (listen backlog BACKLOG, default 1000); sets SINK_PORT, SINK_PID.
start_sink() {
    mkdir -p "$1"; chmod 777 "$1"
    SINK_PORT=$(free_port)
    smtp-sink -u postfix -d "$1/%M." "127.0.0.1:$SINK_PORT" "${2:-1000}" &
    SINK_PID=$!
    wait_port "$SINK_PORT" 10 || die "smtp-sink did not start"
}

# stop_sink: stops the sink start_sink started, if any.
stop_sink() {
    [[ -n ${SINK_PID:-} ]] || return 0
    kill "$SINK_PID" 2>/dev/null || true
    wait "$SINK_PID" 2>/dev/null || true
    SINK_PID=
}

# ---------------------------------------------------------------- OpenDKIM

# opendkim_start DIR PORT DOMAIN KIND: an OpenDKIM milter on 127.0.0.1:PORT signing mail
# from DOMAIN with one key, KIND rsa (RSA-2048, rsa-sha256) or ed (Ed25519,
# ed25519-sha256), relaxed/relaxed. OpenDKIM 2.11 signs with one algorithm per instance, so
# signing with both, as Baton does by default, takes two instances in a row (Postfix's
# smtpd_milters lists both). Adds the PID to OPENDKIM_PIDS.
opendkim_start() {
    local dir=$1 port=$2 domain=$3 kind=$4 alg
    command -v opendkim >/dev/null || die "opendkim missing: apt-get install opendkim opendkim-tools"
    mkdir -p "$dir"
    case $kind in
        rsa) alg=rsa-sha256
             openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/key" 2>/dev/null ;;
        ed) alg=ed25519-sha256
            openssl genpkey -algorithm ED25519 -out "$dir/key" 2>/dev/null ;;
        *) die "opendkim_start: kind must be rsa or ed" ;;
    esac
    chown opendkim "$dir/key"; chmod 600 "$dir/key"
    cat >"$dir/opendkim.conf" <<EOF2
Syslog no
Background no
Mode s
Socket inet:$port@127.0.0.1
Canonicalization relaxed/relaxed
Domain $domain
Selector $kind
KeyFile $dir/key
SignatureAlgorithm $alg
RequireSafeKeys no
PidFile $dir/opendkim.pid
UserID opendkim
EOF2
    opendkim -f -x "$dir/opendkim.conf" >"$dir/opendkim.log" 2>&1 &
    OPENDKIM_PIDS+=("$!")
    wait_port "$port" 10 || { cat "$dir/opendkim.log" >&2; die "opendkim did not listen on $port"; }
}

opendkim_stop() {
    local pid
    for pid in "${OPENDKIM_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    OPENDKIM_PIDS=()
}

# One machine-readable result line per figure, collected by bench/run-all.sh into a CSV:
#   bench_result METRIC UNIT BATON OTHER OTHER_NAME BETTER [BATON_ROUNDS [OTHER_ROUNDS]]
# BATON/OTHER are the reported values (medians when there are rounds); OTHER_NAME says what
# Baton is compared with ("postfix", "postfix+opendkim", "raw-aws", "-" when nothing);
# BETTER is "higher" or "lower"; rounds are ';'-separated per-round values.
# Printed to stdout as: RESULT,<script>,<metric>,<unit>,<baton>,<other>,<other_name>,<better>,<baton rounds>,<other rounds>
bench_result() {
    local script
    script=$(basename "${BASH_SOURCE[1]:-$0}" .sh)
    printf 'RESULT,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$script" "$1" "$2" "$3" "$4" "$5" "$6" "${7:-}" "${8:-}"
}
