#!/usr/bin/env bash
# Repeatable load test of Sluice on one machine, everything on 127.0.0.1:
# builds sluice, starts redis-server, a DNS server for the test domains
# (bench/dns), a receiving sink (Postfix smtp-sink if installed, else
# bench/sink), then `sluice serve` with every stage on (Redis quotas and
# lockouts, content screening, DNS pre-check, DKIM signing, MX delivery), and
# runs `sluice bench` at several concurrencies over STARTTLS plus once with a
# new TLS connection per message. Writes bench/results/latest.md.
#
#   bench/run.sh [--algo rsa|ed25519|both] [--duration 15s] [--size 5000]
#                [--users 50] [--concurrency "1 10 50 100"] [--reuse 100]
#                [--reuse1-concurrency 10] [--drain-wait 60] [--bin PATH]
#                [--sink auto|go|postfix] [--keep]
#
# See bench/README.md.
set -euo pipefail

ALGO=rsa
DURATION=15s
SIZE=5000
NUSERS=50
CONCURRENCY="1 10 50 100"
REUSE=100
REUSE1_CONCURRENCY=10
DRAIN_WAIT=60
BIN=""
SINK=auto
KEEP=0

die() { echo "bench/run.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --algo) ALGO=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --users) NUSERS=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --reuse) REUSE=$2; shift 2 ;;
    --reuse1-concurrency) REUSE1_CONCURRENCY=$2; shift 2 ;;
    --drain-wait) DRAIN_WAIT=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --sink) SINK=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
case "$ALGO" in rsa|ed25519|both) ;; *) die "--algo $ALGO: use rsa, ed25519 or both" ;; esac
case "$SINK" in auto|go|postfix) ;; *) die "--sink $SINK: use auto, go or postfix" ;; esac
for tool in redis-server jq go; do
  if [ "$tool" = go ] && [ -n "$BIN" ]; then continue; fi
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install redis-server jq; Go from go.dev)"
done
if [ "$SINK" = postfix ] && ! command -v smtp-sink >/dev/null; then die "smtp-sink is not installed (apt-get install postfix)"; fi
if [ "$SINK" = auto ]; then
  if command -v smtp-sink >/dev/null; then SINK=postfix; else SINK=go; fi
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RESULTS=$ROOT/bench/results
mkdir -p "$RESULTS"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
DATA=$WORK/data
PIDS=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local i pid
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then
    echo "bench/run.sh: work directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $*" >&2; }

# free_port prints a loopback TCP port nothing listens on.
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

# wait_tcp ADDR PID: until ADDR accepts connections (15s), or PID is gone.
wait_tcp() {
  local host=${1%:*} port=${1##*:}
  for _ in $(seq 150); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# wait_file FILE PID: until FILE exists and is not empty (15s).
wait_file() {
  for _ in $(seq 150); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# --- build -------------------------------------------------------------------
cd "$ROOT"
if [ -n "$BIN" ]; then
  SLUICE=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
else
  log "building sluice"
  go build -o "$WORK/sluice" ./cmd/sluice
  SLUICE=$WORK/sluice
fi
"$SLUICE" bench --help >/dev/null 2>&1 || die "$SLUICE has no bench command"
log "building bench/dns and bench/sink"
go build -o "$WORK/dnsd" ./bench/dns
[ "$SINK" = go ] && go build -o "$WORK/sinkd" ./bench/sink

# --- redis -------------------------------------------------------------------
mkdir -p "$WORK/redis"
REDIS_PORT=$(free_port)
[ -n "$REDIS_PORT" ] || die "no free port"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$WORK/redis" --logfile "$WORK/redis.log" &
PIDS+=($!)
wait_tcp "127.0.0.1:$REDIS_PORT" "${PIDS[-1]}" || die "redis-server did not start: $(tail -5 "$WORK/redis.log")"
log "redis-server on 127.0.0.1:$REDIS_PORT"

# --- DKIM keys and the DNS zone ---------------------------------------------
mkdir -p "$DATA"
SLUICE_DATA_DIR=$DATA "$SLUICE" dkim keygen example.test --selector bench --algo "$ALGO" > "$WORK/keygen.txt"
{
  echo 'example.test. 300 IN TXT "v=spf1 ip4:127.0.0.1 -all"'
  echo '_dmarc.example.test. 300 IN TXT "v=DMARC1; p=reject"'
  SLUICE_DATA_DIR=$DATA "$SLUICE" dkim record example.test
} > "$WORK/zone.txt"
"$WORK/dnsd" -listen 127.0.0.1:0 -addr-file "$WORK/dns.addr" -zone "$WORK/zone.txt" 2>"$WORK/dns.log" &
PIDS+=($!)
wait_file "$WORK/dns.addr" "${PIDS[-1]}" || die "bench/dns did not start: $(cat "$WORK/dns.log")"
DNS_ADDR=$(cat "$WORK/dns.addr")
log "DNS on $DNS_ADDR: sink.test MX, SPF, DMARC p=reject and DKIM ($ALGO) of example.test"

# --- the receiving sink -----------------------------------------------------
if [ "$SINK" = postfix ]; then
  SINK_PORT=$(free_port)
  [ -n "$SINK_PORT" ] || die "no free port"
  SINK_USER=()
  [ "$(id -u)" = 0 ] && SINK_USER=(-u nobody) # smtp-sink refuses to run as root
  smtp-sink "${SINK_USER[@]}" -c "127.0.0.1:$SINK_PORT" 1000 >"$WORK/sink.log" 2>&1 &
  PIDS+=($!)
  wait_tcp "127.0.0.1:$SINK_PORT" "${PIDS[-1]}" || die "smtp-sink did not start: $(cat "$WORK/sink.log")"
else
  "$WORK/sinkd" -listen 127.0.0.1:0 -addr-file "$WORK/sink.addr" -count-file "$WORK/sink.count" 2>"$WORK/sink.log" &
  PIDS+=($!)
  wait_file "$WORK/sink.addr" "${PIDS[-1]}" || die "bench/sink did not start: $(cat "$WORK/sink.log")"
  SINK_PORT=$(cut -d: -f2 < "$WORK/sink.addr")
fi
log "sink ($SINK) on 127.0.0.1:$SINK_PORT"

# --- sluice ------------------------------------------------------------------
SUB_PORT=$(free_port)
TLS_PORT=$(free_port)
[ -n "$SUB_PORT" ] && [ -n "$TLS_PORT" ] && [ "$SUB_PORT" != "$TLS_PORT" ] || die "no free ports"
CONFIG=$WORK/sluice.toml
cat > "$CONFIG" <<EOF
# written by bench/run.sh: every stage on, everything on 127.0.0.1
hostname = "mail.example.test"
data_dir = "$DATA"

[log]
format = "text"
level = "info"

[submission]
listen = ["127.0.0.1:$SUB_PORT"]
listen_tls = ["127.0.0.1:$TLS_PORT"]
max_connections_per_ip = 10000

[dns]
resolver = "$DNS_ADDR"

[relay]
mode = "mx"
mx_port = $SINK_PORT
source_ips = ["127.0.0.1"]
retry_schedule = ["5s", "10s", "30s"]
connect_timeout = "5s"
command_timeout = "30s"

[dkim]
precheck = true

[screen]
enabled = true
# The compromise signals stay on, with thresholds a load test does not reach.
new_recipients_per_hour = 100000000
volume_minimum = 100000000

[quota]
redis_url = "redis://127.0.0.1:$REDIS_PORT/0"
messages_per_hour = 100000000
EOF

log "adding $NUSERS logins"
: > "$WORK/users.txt"
for i in $(seq "$NUSERS"); do
  pw=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
  echo "$pw" | "$SLUICE" user add "bench$i@example.test" --password-stdin --config "$CONFIG" >/dev/null
  echo "bench$i@example.test $pw" >> "$WORK/users.txt"
done

"$SLUICE" serve --config "$CONFIG" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
PIDS+=($SERVE_PID)
wait_tcp "127.0.0.1:$SUB_PORT" "$SERVE_PID" || die "sluice serve did not start: $(tail -20 "$WORK/serve.log")"
log "sluice serve on 127.0.0.1:$SUB_PORT (STARTTLS) and :$TLS_PORT (implicit TLS)"

# queued: messages in the spool queue (not their .state files).
queued() { { find "$DATA/spool/queue" -maxdepth 1 -type f ! -name "*.state" 2>/dev/null || true; } | wc -l; }
sink_count() {
  if [ "$SINK" = postfix ]; then # smtp-sink -c: "sess=N quit=N mesg=N\r"
    tr '\r' '\n' < "$WORK/sink.log" | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2
  else
    cut -d' ' -f1 < "$WORK/sink.count"
  fi
}
# cpu_ticks: user+system clock ticks of sluice serve so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVE_PID/stat"; }
TICK=$(getconf CLK_TCK)

LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
ROWS=()
bench_run() { # NAME CONCURRENCY REUSE
  local name=$1 conc=$2 reuse=$3 json=$WORK/$1.json t0 t1 q d drained
  log "sluice bench $name: concurrency $conc, reuse $reuse, $SIZE bytes, $DURATION"
  t0=$(cpu_ticks)
  # Peak RSS of the server during the run, sampled every 100ms.
  echo 0 > "$WORK/peak"
  touch "$WORK/sampling"
  ( peak=0
    while [ -e "$WORK/sampling" ]; do
      r=0
      while read -r k v _; do [ "$k" = VmRSS: ] && r=$v; done < "/proc/$SERVE_PID/status" 2>/dev/null || true
      if [ "$r" -gt "$peak" ]; then peak=$r; echo "$peak" > "$WORK/peak"; fi
      sleep 0.1
    done ) &
  local sampler=$!
  "$SLUICE" bench --addr "127.0.0.1:$SUB_PORT" --tls starttls --users "$WORK/users.txt" \
    --concurrency "$conc" --reuse "$reuse" --size "$SIZE" --duration "$DURATION" \
    --to 'rcpt{n}@sink.test' --json > "$json" || true
  rm -f "$WORK/sampling"
  wait "$sampler" || true
  jq -e .sent "$json" >/dev/null || die "sluice bench $name printed no report"
  q=$(queued)
  drained="-"
  for ((d = 0; d < DRAIN_WAIT * 10; d++)); do
    if [ "$(queued)" -eq 0 ]; then drained=$(awk -v d="$d" 'BEGIN{printf "%.1fs", d / 10}'); break; fi
    sleep 0.1
  done
  t1=$(cpu_ticks) # after the drain: the CPU of accepting and of delivering
  ROWS+=("$(jq -r --arg name "$name" --arg q "$q" --arg drained "$drained" --arg rss "$(( $(cat "$WORK/peak") / 1024 ))" \
    --arg cpu "$(( (t1 - t0) * 1000 / TICK ))" '
    def f: . * 10 | round / 10;
    "| \($name) | \(.concurrency) | \(.reuse) | \(.sent) | \(.accepted) | \(.deferred + .rejected + .errors) | \(.msgs_per_s | f) | \(.latency_ms.data.p50 | f) | \(.latency_ms.data.p99 | f) | \(.latency_ms.connect.p50 | f) / \(.latency_ms.connect.p99 | f) | \(.latency_ms.auth.p50 | f) / \(.latency_ms.auth.p99 | f) | \(if .accepted > 0 then ($cpu | tonumber) / .accepted * 100 | round / 100 else "-" end) | \($rss) | \($q) | \($drained) |"' "$json")")
  if [ "$(jq '.deferred + .rejected + .errors' "$json")" != 0 ]; then
    log "not accepted in $name:"; jq -r '.replies[] | select(.class != "accepted") | "   \(.count) x \(.class) \(.stage) \(.code // "") \(.enhanced // "") \(.kind // "") \(.text)"' "$json" >&2
  fi
  echo "${ROWS[-1]}" >&2
}

for c in $CONCURRENCY; do bench_run "c$c-reuse$REUSE" "$c" "$REUSE"; done
bench_run "c$REUSE1_CONCURRENCY-reuse1" "$REUSE1_CONCURRENCY" 1

SPOOL_END=$(ls "$DATA/spool/queue" | wc -l)
SPOOL_MSGS=$(queued)
sleep 0.5 # bench/sink updates its count file every 200ms
DELIVERED=$(sink_count)
WARNS=$(grep -c 'level=WARN' "$WORK/serve.log" || true)
ERRORS=$(grep -c 'level=ERROR' "$WORK/serve.log" || true)
SIGNED=$(grep -o 'dkim="[^"]*"' "$WORK/serve.log" | sort | uniq -c | sort -rn | head -3 | sed 's/^ *//' | paste -sd ';' || true)

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$RESULTS/$STAMP-$ALGO.md
{
  echo "# sluice bench, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "$("$SLUICE" version), $(go version 2>/dev/null | cut -d' ' -f3), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -sr)."
  echo "DKIM $ALGO; STARTTLS; $SIZE-byte bodies, 1 recipient, $DURATION per run; $NUSERS logins round-robin;"
  echo "Redis quotas, screening, DNS pre-check, MX delivery to a local sink ($SINK); client, server, Redis, DNS and sink share the machine"
  echo "(1-minute load average $LOAD_BEFORE before the first run, $(cut -d' ' -f1 /proc/loadavg) after the last)."
  echo
  echo "| run | conc | reuse | sent | accepted | not accepted | msgs/s | data p50 ms | data p99 ms | connect p50 / p99 ms | auth p50 / p99 ms | server CPU ms/msg | server peak RSS MB | queued at end | drained in |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "msgs/s: accepted messages per second. data: end of DATA to the 250 (spool fsync, signing, screening)."
  echo "server CPU ms/msg: CPU time of sluice serve from the start of the run until its queue drained, per accepted message."
  echo "queued at end: messages still in data/spool/queue when the run ended; drained in: until it was empty (limit ${DRAIN_WAIT}s)."
  echo
  echo "At the end: \`ls data/spool/queue | wc -l\` = $SPOOL_END ($SPOOL_MSGS messages); delivered to the sink: $DELIVERED; server log: $WARNS WARN, $ERRORS ERROR lines; signing: $SIGNED."
} > "$OUT"
cp "$OUT" "$RESULTS/latest.md"
mkdir -p "$RESULTS/$STAMP-$ALGO-json"
cp "$WORK"/*.json "$RESULTS/$STAMP-$ALGO-json/"
grep -E 'level=(WARN|ERROR)' "$WORK/serve.log" | head -1000 > "$RESULTS/$STAMP-$ALGO-json/serve-warnings.log" || true
echo >&2
cat "$OUT"
echo >&2
log "written: $OUT and bench/results/latest.md"
