# shellcheck shell=bash
# What bench/run.sh and bench/compare-postfix.sh share; sourced by both, not
# run: the options they have in common, the work directory and the processes
# started (all stopped at exit), free ports and waiting, building sluice, the
# load runs, CPU time from /proc and the results table.
#
# A script that sources it defines queued (the messages in its queue, for
# wait_drained), and may define stop_daemons: called at exit before the
# processes in PIDS are stopped, for daemons that do not run below the script.

PROG=bench/${0##*/}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=$ROOT/bench/results

# The options both scripts take, with their defaults.
ALGO=rsa
DURATION=15s
SIZE=5000
NUSERS=50
CONCURRENCY="1 10 50 100"
REUSE=100
REUSE1_CONCURRENCY=10
DRAIN_WAIT=60
BIN=""
KEEP=0

PIDS=() # processes started, stopped last to first at exit
ROWS=() # the results table, a row per load run

die() { echo "$PROG: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

# common_option ARG...: takes the option at the front of ARG when it is one of
# those above; TAKEN is how many words it took (0: not one of them).
common_option() {
  local var
  case "$1" in
    --keep) KEEP=1; TAKEN=1; return 0 ;;
    --algo) var=ALGO ;;
    --duration) var=DURATION ;;
    --size) var=SIZE ;;
    --users) var=NUSERS ;;
    --concurrency) var=CONCURRENCY ;;
    --reuse) var=REUSE ;;
    --reuse1-concurrency) var=REUSE1_CONCURRENCY ;;
    --drain-wait) var=DRAIN_WAIT ;;
    --bin) var=BIN ;;
    *) TAKEN=0; return 0 ;;
  esac
  [ $# -ge 2 ] || die "$1 needs a value (see --help)"
  printf -v "$var" %s "$2"
  TAKEN=2
}

check_common_options() {
  case "$ALGO" in rsa|ed25519|both) ;; *) die "--algo $ALGO: use rsa, ed25519 or both" ;; esac
}

# start_work PREFIX: makes the work directory WORK and sets the traps that,
# at exit, stop what was started and remove WORK (kept with --keep, and on
# failure for its logs, not on Ctrl-C).
start_work() {
  mkdir -p "$RESULTS"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  if declare -F stop_daemons >/dev/null; then stop_daemons; fi
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    stop_tree "${PIDS[i]}"
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  if [ "$KEEP" = 1 ] || { [ "$rc" != 0 ] && [ "$rc" != 130 ]; }; then
    echo "$PROG: work directory kept: $WORK (rm -rf it when done)" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}

# --- processes ---------------------------------------------------------------

# proc_table: "PID PPID TICKS" of every process, TICKS being its user and
# system clock ticks plus those of the children it reaped (cutime, cstime),
# so that a child that exited still counts. The command name in
# /proc/PID/stat is in parentheses and may hold spaces.
proc_table() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '
    { i = length($0); while (i > 0 && substr($0, i, 1) != ")") i--
      n = split(substr($0, i + 2), f, " ")
      if (n >= 15) print $1, f[2], f[12] + f[13] + f[14] + f[15] }'
}

# machine_ticks: clock ticks of the whole machine so far, from /proc/stat:
# busy (every process and the kernel: user, nice, system, irq, softirq),
# steal (taken by the hypervisor for other guests), and all of them with
# idle and iowait.
machine_ticks() {
  awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8; print busy, $9 + 0, busy + $5 + $6 + $9; exit }' /proc/stat
}

# descendants PID: PID and every process below it, one per line.
descendants() {
  proc_table | awk -v root="$1" '
    { parent[$1] = $2 }
    END { for (p in parent) { q = p; while (q != "" && q != root && q > 1) q = parent[q]; if (q == root) print p } }'
}

# stop_tree PID: TERM to PID and what runs below it, then KILL after 10s.
stop_tree() {
  local pids
  pids=$(descendants "$1")
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 100); do
    # shellcheck disable=SC2086
    kill -0 $pids 2>/dev/null || break
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
}

# stop_proc PID: stop_tree PID, reap it and take it out of PIDS (so that the
# cleanup does not signal another process that gets its number).
stop_proc() {
  local i
  stop_tree "$1"
  wait "$1" 2>/dev/null || true
  for i in "${!PIDS[@]}"; do
    if [ "${PIDS[i]}" = "$1" ]; then unset 'PIDS[i]'; fi
  done
  PIDS=("${PIDS[@]}")
}

# tree_ticks ROOTS...: for each argument (space-separated PIDs, may be
# empty) the clock ticks used so far by those processes and every process
# below them (see proc_table), one number per argument.
tree_ticks() {
  local roots="" g=0 grp p
  for grp in "$@"; do
    g=$((g + 1))
    for p in $grp; do roots+=" $p:$g"; done
  done
  proc_table | awk -v roots="$roots" -v groups="$#" '
    { parent[$1] = $2; t[$1] = $3 }
    END { n = split(roots, r, " "); for (k = 1; k <= n; k++) { split(r[k], x, ":"); group[x[1]] = x[2] }
      for (p in t) {
        q = p; while (q != "" && q > 1 && !(q in group)) q = parent[q]
        if (q != "" && q > 1) sum[group[q]] += t[p] }
      out = ""; for (k = 1; k <= groups; k++) out = out (k > 1 ? " " : "") (sum[k] + 0)
      print out }'
}

TICK=$(getconf CLK_TCK)

# per_msg T0 T1 ACCEPTED: CPU milliseconds per accepted message between two
# tree_ticks samples: the total, then each group's ("a / b / ..."); "-" when
# nothing was accepted.
per_msg() {
  awk -v a="$1" -v b="$2" -v hz="$TICK" -v n="$3" '
    BEGIN { k = split(a, x, " "); split(b, y, " "); s = 0; out = ""
      for (i = 1; i <= k; i++) { d = (y[i] - x[i]) * 1000 / hz; s += d
        out = out (i > 1 ? " / " : "") (n > 0 ? sprintf("%.2f", d / n) : "-") }
      printf "%s %s\n", (n > 0 ? sprintf("%.2f", s / n) : "-"), out }'
}

# --- ports and waiting -------------------------------------------------------

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port VAR: sets VAR to a loopback TCP port nothing listens on and not
# handed out before.
USED_PORTS=" "
free_port() {
  local _fp
  for _ in $(seq 200); do
    _fp=$((20000 + RANDOM % 40000))
    case "$USED_PORTS" in *" $_fp "*) continue ;; esac
    if ! tcp_open "$_fp"; then
      USED_PORTS+="$_fp "
      printf -v "$1" %s "$_fp"
      return 0
    fi
  done
  die "no free port found"
}

# poll PID CHECK...: until the command CHECK succeeds (15s at most); fails as
# soon as PID, when not empty, has gone.
poll() {
  local pid=$1
  shift
  for _ in $(seq 150); do
    "$@" && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

# wait_tcp PORT PID: until 127.0.0.1:PORT accepts connections.
wait_tcp() { poll "$2" tcp_open "$1"; }

# wait_drained SECONDS: until queued is 0; prints the time it took, or "-".
wait_drained() {
  local d
  for ((d = 0; d < $1 * 10; d++)); do
    if [ "$(queued)" -eq 0 ]; then awk -v d="$d" 'BEGIN{printf "%.1fs", d / 10}'; return 0; fi
    sleep 0.1
  done
  echo "-"
}

# --- sluice and its load -----------------------------------------------------

# build_sluice: SLUICE is the binary of --bin, or one built from this tree.
# Leaves the current directory at the repository root.
build_sluice() {
  if [ -n "$BIN" ]; then
    SLUICE=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
  fi
  cd "$ROOT"
  if [ -z "$BIN" ]; then
    log "building sluice"
    go build -o "$WORK/sluice" ./cmd/sluice
    SLUICE=$WORK/sluice
  fi
  "$SLUICE" bench --help >/dev/null 2>&1 || die "$SLUICE has no bench command"
}

new_password() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }

# sluice_bench JSON USERS [FLAG...]: sluice bench over STARTTLS to
# 127.0.0.1:$SUB_PORT with the logins of the file USERS, $SIZE-byte messages
# each to a new recipient at sink.test; its report goes to the file JSON.
sluice_bench() {
  local json=$1 users=$2
  shift 2
  "$SLUICE" bench --addr "127.0.0.1:$SUB_PORT" --tls starttls --users "$users" --size "$SIZE" \
    --to 'rcpt{n}@sink.test' --json "$@" > "$json" || true
  jq -e .sent "$json" >/dev/null 2>&1 || die "sluice bench printed no report ($json)"
}

# load_run NAME CONCURRENCY REUSE [FLAG...]: one load run of $DURATION with
# the logins of $WORK/users.txt; its report is $WORK/NAME.json.
load_run() {
  local name=$1 conc=$2 reuse=$3
  shift 3
  log "sluice bench $name: concurrency $conc, reuse $reuse, $SIZE bytes, $DURATION $*"
  sluice_bench "$WORK/$name.json" "$WORK/users.txt" --concurrency "$conc" --reuse "$reuse" --duration "$DURATION" "$@"
}

# warm_up: every login authenticates once and sends one message, before
# the measured runs: a server's first check of a password is a slow hash
# (argon2id, about 35 ms of CPU here) that it then caches, so the runs
# measure the steady state of mailboxes that send, not a cold start. The
# queue is left to drain.
warm_up() {
  log "warm-up: each of the $NUSERS logins once"
  sluice_bench "$WORK/warm-up.out" "$WORK/users.txt" --concurrency "$(( NUSERS < 50 ? NUSERS : 50 ))" --reuse 1 --messages "$NUSERS"
  wait_drained "$DRAIN_WAIT" >/dev/null
}

# print_replies JSON [CONDITION]: the replies of a report (those for which
# the jq CONDITION holds), one line each, to stderr.
print_replies() {
  jq -r '.replies[] | select('"${2:-true}"') | "   \(.count) x \(.class) \(.stage) \(.code // "") \(.enhanced // "") \(.kind // "") \(.text)"' "$1" >&2
}

# --- the results table -------------------------------------------------------

# table_head COLUMN...: the header and separator lines of the table: the
# columns of every load run's report, then COLUMNs.
table_head() {
  local head="| run | conc | reuse | sent | accepted | not accepted | msgs/s | data p50 ms | data p99 ms | connect p50 / p99 ms | auth p50 / p99 ms |"
  local sep="|---|---|---|---|---|---|---|---|---|---|---|" c
  for c in "$@"; do head+=" $c |"; sep+="---|"; done
  echo "$head"
  echo "$sep"
}

# add_row NAME JSON CELL...: appends the row of a load run to ROWS (the
# columns of table_head from its report, then CELLs) and shows it on stderr,
# after the replies that were not acceptances.
add_row() {
  local name=$1 json=$2 row cell
  shift 2
  row=$(jq -r --arg name "$name" '
    def f: . * 10 | round / 10;
    "| \($name) | \(.concurrency) | \(.reuse) | \(.sent) | \(.accepted) | \(.deferred + .rejected + .errors) | \(.msgs_per_s | f) | \(.latency_ms.data.p50 | f) | \(.latency_ms.data.p99 | f) | \(.latency_ms.connect.p50 | f) / \(.latency_ms.connect.p99 | f) | \(.latency_ms.auth.p50 | f) / \(.latency_ms.auth.p99 | f) |"' "$json")
  for cell in "$@"; do row+=" $cell |"; done
  ROWS+=("$row")
  if [ "$(jq '.deferred + .rejected + .errors' "$json")" != 0 ]; then
    log "not accepted in $name:"
    print_replies "$json" '.class != "accepted"'
  fi
  echo "$row" >&2
}

machine() { echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -sr)"; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }

# publish STEM LATEST LOG REGEX: the report read from stdin becomes
# bench/results/STEM.md and bench/results/LATEST; the runs' JSON reports and
# the lines of LOG that match REGEX (its first 1000) go to STEM-json/.
publish() {
  local out=$RESULTS/$1.md dir=$RESULTS/$1-json
  cat > "$out"
  cp "$out" "$RESULTS/$2"
  mkdir -p "$dir"
  cp "$WORK"/*.json "$dir/"
  grep -E "$4" "$3" | head -1000 > "$dir/$(basename "${3%.log}")-warnings.log" || true
  echo >&2
  cat "$out"
  echo >&2
  log "written: $out and bench/results/$2"
}
