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
#                [--sink auto|go|postfix] [--half-load-concurrency 10]
#                [--half-load-rate N]
#                [--pin-server CPU] [--redis tcp|unix] [--keep]
#
# --redis unix: Sluice reaches Redis over its Unix socket (redis_url =
# "unix://..."), as a one-host deployment would; tcp (default) over 127.0.0.1.
#
# --pin-server CPU runs sluice serve alone on that CPU and everything else
# (client, Redis, DNS, sink) on the others: the server's throughput per core.
#
# See bench/README.md.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

SINK=auto
HALF_CONC=10
HALF_RATE=""
PIN=""
REDIS_VIA=tcp
while [ $# -gt 0 ]; do
  common_option "$@"
  if [ "$TAKEN" -gt 0 ]; then shift "$TAKEN"; continue; fi
  case "$1" in
    --sink) SINK=$2; shift 2 ;;
    --half-load-concurrency) HALF_CONC=$2; shift 2 ;;
    --half-load-rate) HALF_RATE=$2; shift 2 ;;
    --pin-server) PIN=$2; shift 2 ;;
    --redis) REDIS_VIA=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
check_common_options
case "$SINK" in auto|go|postfix) ;; *) die "--sink $SINK: use auto, go or postfix" ;; esac
case "$HALF_RATE" in "") ;; *[!0-9]*|0) die "--half-load-rate $HALF_RATE: give messages per second, a whole number above 0" ;; esac
case "$REDIS_VIA" in tcp|unix) ;; *) die "--redis $REDIS_VIA: use tcp or unix" ;; esac
for tool in redis-server redis-cli jq go; do
  if [ "$tool" = go ] && [ -n "$BIN" ]; then continue; fi
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install redis-server jq; Go from go.dev)"
done
if [ "$SINK" = postfix ] && ! command -v smtp-sink >/dev/null; then die "smtp-sink is not installed (apt-get install postfix)"; fi
if [ "$SINK" = auto ]; then
  if command -v smtp-sink >/dev/null; then SINK=postfix; else SINK=go; fi
fi

# With --pin-server, this script and all it starts run on the other CPUs;
# serve alone is put on CPU $PIN below.
SERVE_ON=()
if [ -n "$PIN" ]; then
  command -v taskset >/dev/null || die "--pin-server needs taskset (apt-get install util-linux)"
  NCPU=$(nproc)
  [ "$NCPU" -ge 2 ] && [ "$PIN" -ge 0 ] 2>/dev/null && [ "$PIN" -lt "$NCPU" ] || die "--pin-server $PIN: needs 2 or more CPUs and a CPU number below $NCPU"
  OTHERS=$(seq 0 $((NCPU - 1)) | grep -vx "$PIN" | paste -sd,)
  taskset -pc "$OTHERS" $$ >/dev/null
  SERVE_ON=(taskset -c "$PIN")
fi

start_work sluice-bench
DATA=$WORK/data

# --- build -------------------------------------------------------------------
build_sluice
log "building bench/dns and bench/sink"
go build -o "$WORK/dnsd" ./bench/dns
[ "$SINK" = go ] && go build -o "$WORK/sinkd" ./bench/sink

# --- redis -------------------------------------------------------------------
mkdir -p "$WORK/redis"
free_port REDIS_PORT
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --unixsocket "$WORK/redis/redis.sock" --unixsocketperm 700 \
  --dir "$WORK/redis" --logfile "$WORK/redis.log" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_tcp "$REDIS_PORT" "$REDIS_PID" || die "redis-server did not start: $(tail -5 "$WORK/redis.log")"
log "redis-server on 127.0.0.1:$REDIS_PORT and $WORK/redis/redis.sock; sluice uses $REDIS_VIA"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
[ "$REDIS_VIA" = unix ] && REDIS_URL="unix://$WORK/redis/redis.sock?db=0"

# --- DKIM keys and the DNS zone ---------------------------------------------
mkdir -p "$DATA"
SLUICE_DATA_DIR=$DATA "$SLUICE" dkim keygen example.test --selector bench --algo "$ALGO" > "$WORK/keygen.txt"
{
  echo 'example.test. 300 IN TXT "v=spf1 ip4:127.0.0.1 -all"'
  echo '_dmarc.example.test. 300 IN TXT "v=DMARC1; p=reject"'
  SLUICE_DATA_DIR=$DATA "$SLUICE" dkim record example.test
} > "$WORK/zone.txt"
"$WORK/dnsd" -listen 127.0.0.1:0 -addr-file "$WORK/dns.addr" -zone "$WORK/zone.txt" 2>"$WORK/dns.log" &
PIDS+=("$!")
poll "${PIDS[-1]}" test -s "$WORK/dns.addr" || die "bench/dns did not start: $(cat "$WORK/dns.log")"
DNS_ADDR=$(cat "$WORK/dns.addr")
log "DNS on $DNS_ADDR: sink.test MX, SPF, DMARC p=reject and DKIM ($ALGO) of example.test"

# --- the receiving sink -----------------------------------------------------
if [ "$SINK" = postfix ]; then
  free_port SINK_PORT
  SINK_USER=()
  [ "$(id -u)" = 0 ] && SINK_USER=(-u nobody) # smtp-sink refuses to run as root
  smtp-sink "${SINK_USER[@]}" -c "127.0.0.1:$SINK_PORT" 1000 >"$WORK/sink.log" 2>&1 &
  PIDS+=($!)
  wait_tcp "$SINK_PORT" "${PIDS[-1]}" || die "smtp-sink did not start: $(cat "$WORK/sink.log")"
else
  "$WORK/sinkd" -listen 127.0.0.1:0 -addr-file "$WORK/sink.addr" -count-file "$WORK/sink.count" 2>"$WORK/sink.log" &
  PIDS+=($!)
  poll "${PIDS[-1]}" test -s "$WORK/sink.addr" || die "bench/sink did not start: $(cat "$WORK/sink.log")"
  SINK_PORT=$(cut -d: -f2 < "$WORK/sink.addr")
fi
log "sink ($SINK) on 127.0.0.1:$SINK_PORT"

# --- sluice ------------------------------------------------------------------
free_port SUB_PORT
free_port TLS_PORT
free_port HTTP_PORT
CONFIG=$WORK/sluice.toml
cat > "$CONFIG" <<EOF
# written by bench/run.sh: every stage on, everything on 127.0.0.1
hostname = "mail.example.test"
data_dir = "$DATA"

[log]
format = "text"
level = "info"

[http]
listen = "127.0.0.1:$HTTP_PORT"

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
redis_url = "$REDIS_URL"
messages_per_hour = 100000000
EOF

log "adding $NUSERS logins"
: > "$WORK/users.txt"
for i in $(seq "$NUSERS"); do
  pw=$(new_password)
  echo "$pw" | "$SLUICE" user add "bench$i@example.test" --password-stdin --config "$CONFIG" >/dev/null
  echo "bench$i@example.test $pw" >> "$WORK/users.txt"
done

"${SERVE_ON[@]}" "$SLUICE" serve --config "$CONFIG" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
PIDS+=("$SERVE_PID")
wait_tcp "$SUB_PORT" "$SERVE_PID" || die "sluice serve did not start: $(tail -20 "$WORK/serve.log")"
log "sluice serve on 127.0.0.1:$SUB_PORT (STARTTLS) and :$TLS_PORT (implicit TLS)"

# queued: messages in the spool: the server's gauge (queue files and the
# journal's messages in their first attempt), else the queue files.
queued() {
  local g
  g=$(spool_gauge); g=${g%.*}
  if [ "${g:-0}" -gt 0 ]; then echo "$g"; return; fi
  { find "$DATA/spool/queue" -maxdepth 1 -type f ! -name "*.state" 2>/dev/null || true; } | wc -l
}
sink_count() {
  if [ "$SINK" = postfix ]; then # smtp-sink -c: "sess=N quit=N mesg=N\r"
    tr '\r' '\n' < "$WORK/sink.log" | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2
  else
    cut -d' ' -f1 < "$WORK/sink.count"
  fi
}
# cpu_ticks: user+system clock ticks so far of sluice serve (and what runs
# below it), then of redis-server.
cpu_ticks() { tree_ticks "$SERVE_PID" "$REDIS_PID"; }
# redis_calls: the script runs Redis has done so far, then all the commands
# it has run (those the scripts ran included).
redis_calls() {
  redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' | awk -F'[:=,]' '
    /^cmdstat_/ { all += $3; if ($1 ~ /^cmdstat_(eval|evalsha)$/) top += $3 }
    END { print top + 0, all + 0 }'
}

# spool_gauge: the server's sluice_spool_messages (queue files and journaled
# messages in their first attempt), from /metrics.
spool_gauge() {
  local v
  v=$( { exec 3<>"/dev/tcp/127.0.0.1/$HTTP_PORT" && printf 'GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n' >&3 &&
    grep -m1 '^sluice_spool_messages ' <&3; } 2>/dev/null | awk '{print $2}')
  echo "${v:-0}"
}
warm_up
LOAD_BEFORE=$(loadavg)
bench_run() { # NAME CONCURRENCY REUSE [FLAG...]
  local json=$WORK/$1.json t0 t1 q drained cpu rcpu sampler n c0 a0 c1 a1 m0 m1 ml mcpu steal
  t0=$(cpu_ticks)
  m0=$(machine_ticks)
  read -r c0 a0 < <(redis_calls)
  # Peak RSS of the server during the load, sampled every 100ms, and the
  # most messages in its spool, every 500ms.
  echo 0 > "$WORK/peak"
  echo 0 > "$WORK/spoolmax"
  touch "$WORK/sampling"
  ( peak=0 smax=0 i=0
    while [ -e "$WORK/sampling" ]; do
      r=0
      while read -r k v _; do [ "$k" = VmRSS: ] && r=$v; done < "/proc/$SERVE_PID/status" 2>/dev/null || true
      if [ "$r" -gt "$peak" ]; then peak=$r; echo "$peak" > "$WORK/peak"; fi
      if [ $((i++ % 5)) = 0 ]; then
        g=$(spool_gauge); g=${g%.*}
        if [ "${g:-0}" -gt "$smax" ]; then smax=$g; echo "$smax" > "$WORK/spoolmax"; fi
      fi
      sleep 0.1
    done ) &
  sampler=$!
  load_run "$@"
  ml=$(machine_ticks)
  rm -f "$WORK/sampling"
  wait "$sampler" || true
  q=$(queued)
  drained=$(wait_drained "$DRAIN_WAIT")
  t1=$(cpu_ticks) # after the drain: the CPU of accepting and of delivering
  m1=$(machine_ticks)
  read -r c1 a1 < <(redis_calls)
  n=$(jq .accepted "$json")
  # The whole machine's busy time until the drain, per message; the share
  # of the load's time the hypervisor stole.
  mcpu=$(awk -v a="$m0" -v b="$m1" -v hz="$TICK" -v n="$n" 'BEGIN { split(a, x, " "); split(b, y, " ")
    if (n > 0) printf "%.2f", (y[1] - x[1]) * 1000 / hz / n; else print "-" }')
  steal=$(awk -v a="$m0" -v b="$ml" 'BEGIN { split(a, x, " "); split(b, y, " ")
    t = y[3] - x[3]; if (t > 0) printf "%.0f", (y[2] - x[2]) * 100 / t; else print "-" }')
  read -r _ cpu _ rcpu < <(per_msg "$t0" "$t1" "$n")
  rcpu=$(awk -v ms="$rcpu" 'BEGIN { if (ms == "-") print "-"; else printf "%d", ms * 1000 }')
  add_row "$1" "$json" "$cpu" "$mcpu" "$steal" "$(jq -r 'if .sent > 0 then (.client_cpu_s * 1000 / .sent * 100 | round / 100) else "-" end' "$json")" "$rcpu" "$(awk -v c=$((c1 - c0)) -v a=$((a1 - a0)) -v n="$n" 'BEGIN { if (n > 0) printf "%.1f / %.0f", c / n, a / n; else print "-" }')" \
    "$(( $(cat "$WORK/peak") / 1024 ))" "$(cat "$WORK/spoolmax")" "$q" "$drained"
}

for c in $CONCURRENCY; do bench_run "c$c-reuse$REUSE" "$c" "$REUSE"; done
# Half the highest rate of those runs, over $HALF_CONC connections: the
# latency a server at half its capacity gives.
MAX_RATE=$(for c in $CONCURRENCY; do jq .msgs_per_s "$WORK/c$c-reuse$REUSE.json"; done | sort -g | tail -1)
HALF=$(awk -v m="$MAX_RATE" 'BEGIN { printf "%d", m / 2 }')
# --half-load-rate N: that rate instead, so that two builds are compared
# at the same load.
if [ -n "$HALF_RATE" ]; then HALF=$HALF_RATE; fi
if [ "$HALF" -gt 0 ]; then bench_run "half-load-$HALF" "$HALF_CONC" "$REUSE" --rate "$HALF"; fi
if [ "$REUSE1_CONCURRENCY" -gt 0 ]; then bench_run "c$REUSE1_CONCURRENCY-reuse1" "$REUSE1_CONCURRENCY" 1; fi

SPOOL_END=$(ls "$DATA/spool/queue" | wc -l)
SPOOL_MSGS=$(queued)
sleep 0.5 # bench/sink updates its count file every 200ms
DELIVERED=$(sink_count)
WARNS=$(grep -c 'level=WARN' "$WORK/serve.log" || true)
ERRORS=$(grep -c 'level=ERROR' "$WORK/serve.log" || true)
SIGNED=$(grep -o 'dkim="[^"]*"' "$WORK/serve.log" | sort | uniq -c | sort -rn | head -3 | sed 's/^ *//' | paste -sd ';' || true)
# Redis's own account of every command it ran (calls, µs per call), kept
# with the results.
redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' > "$WORK/redis-commandstats.txt"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
{
  echo "# sluice bench, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "$("$SLUICE" version), $(go version 2>/dev/null | cut -d' ' -f3), $(machine)."
  echo "DKIM $ALGO; STARTTLS; $SIZE-byte bodies, 1 recipient, $DURATION per run; $NUSERS logins round-robin; Redis over $REDIS_VIA;"
  if [ -n "$PIN" ]; then
    echo "Redis quotas, screening, DNS pre-check, MX delivery to a local sink ($SINK); sluice serve alone on CPU $PIN, client, Redis, DNS and sink on CPU $OTHERS"
  else
    echo "Redis quotas, screening, DNS pre-check, MX delivery to a local sink ($SINK); client, server, Redis, DNS and sink share the machine"
  fi
  echo "(1-minute load average $LOAD_BEFORE before the first run, $(loadavg) after the last)."
  echo
  table_head "server CPU ms/msg" "machine CPU ms/msg" "steal %" "client CPU ms/msg" "redis CPU µs/msg" "redis scripts / commands per msg" "server peak RSS MB" "spool max" "queued at end" "drained in"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "msgs/s: accepted messages per second. data: end of DATA to the 250 (spool fsync, signing, screening)."
  echo "server CPU ms/msg: CPU time of sluice serve from the start of the run until its queue drained, per accepted message; machine CPU: the busy time of the whole machine (every process and the kernel) over the same time, per accepted message: on a saturated machine, msgs/s is about CPUs / machine CPU; steal %: the share of the run's CPU time the hypervisor gave to other guests (/proc/stat), high when the host is busy; client CPU: that of sluice bench during the run; redis CPU like the server's; redis scripts: script runs (each one round trip), commands: all that Redis ran, those in scripts included."
  echo "spool max: the most messages in the spool (sluice_spool_messages: queue files and journaled messages) seen during the run, sampled every 500ms."
  echo "half-load-N: --rate N, half the highest msgs/s of the runs above, over $HALF_CONC connections (--half-load-concurrency)."
  echo "queued at end: messages still in the spool (queue files and journal) when the run ended; drained in: until it was empty (limit ${DRAIN_WAIT}s)."
  echo
  echo "At the end: \`ls data/spool/queue | wc -l\` = $SPOOL_END ($SPOOL_MSGS messages); delivered to the sink: $DELIVERED; server log: $WARNS WARN, $ERRORS ERROR lines; signing: $SIGNED."
} | publish "$STAMP-$ALGO" latest.md "$WORK/serve.log" 'level=(WARN|ERROR)'
cp "$WORK/redis-commandstats.txt" "$RESULTS/$STAMP-$ALGO-json/"
