#!/usr/bin/env bash
# The classic stack under the same load as bench/run.sh: a separate Postfix
# instance (submission with STARTTLS and SASL AUTH through Dovecot, the
# login must own the sender), OpenDKIM signing as a milter, postfwd for the
# hourly quota per login, delivery to a Postfix smtp-sink; then `sluice
# bench` with the same parameters as bench/run.sh. Everything runs in a
# temporary directory on free 127.0.0.1 ports; the machine's own Postfix,
# Dovecot and OpenDKIM (configured or not, running or not) are not touched.
# Writes bench/results/postfix-latest.md.
#
#   bench/compare-postfix.sh [--algo rsa|ed25519|both] [--duration 15s]
#       [--size 5000] [--users 50] [--concurrency "1 10 50 100"]
#       [--reuse 100] [--reuse1-concurrency 10] [--drain-wait 60]
#       [--policy postfwd|none] [--pass-scheme argon2id|sha512-crypt]
#       [--milter unix|inet]
#       [--bin PATH] [--no-install] [--keep]
#
# Needs root (Postfix and Dovecot start as root and drop privileges). Missing
# Debian packages are installed with apt-get unless --no-install.
# See bench/README.md.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

POLICY=postfwd
PASS_SCHEME=argon2id
MILTER=unix
INSTALL=1

while [ $# -gt 0 ]; do
  common_option "$@"
  if [ "$TAKEN" -gt 0 ]; then shift "$TAKEN"; continue; fi
  case "$1" in
    --policy) POLICY=$2; shift 2 ;;
    --pass-scheme) PASS_SCHEME=$2; shift 2 ;;
    --milter) MILTER=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
check_common_options
case "$POLICY" in postfwd|none) ;; *) die "--policy $POLICY: use postfwd or none" ;; esac
case "$PASS_SCHEME" in argon2id|sha512-crypt) ;; *) die "--pass-scheme $PASS_SCHEME: use argon2id or sha512-crypt" ;; esac
case "$MILTER" in unix|inet) ;; *) die "--milter $MILTER: use unix or inet" ;; esac
[ "$(id -u)" = 0 ] || die "run as root: Postfix, Dovecot and OpenDKIM start as root and drop privileges"

TEMPLATES=$ROOT/bench/postfix

# --- packages ----------------------------------------------------------------
# command -> Debian package
declare -A PKG=([postfix]=postfix [smtp-sink]=postfix [postqueue]=postfix
  [opendkim]=opendkim [opendkim-genkey]=opendkim-tools [dovecot]=dovecot-core
  [doveadm]=dovecot-core [jq]=jq [openssl]=openssl)
[ "$POLICY" = postfwd ] && PKG[postfwd2]=postfwd
missing=()
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null || missing+=("${PKG[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  [ "$INSTALL" = 1 ] || die "missing packages: ${missing[*]} (apt-get install ${missing[*]})"
  command -v apt-get >/dev/null || die "missing packages: ${missing[*]}, and no apt-get to install them"
  log "installing ${missing[*]}"
  # The packages' own services must not start on the default configuration:
  # a policy-rc.d that refuses, for the time of the install, unless one is
  # there already.
  POLICY_RC=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    POLICY_RC=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# bench/compare-postfix.sh: no service starts during its apt-get install\nexit 101\n' > "$POLICY_RC"
    chmod 755 "$POLICY_RC"
  fi
  # A new Postfix package leaves the default instance unconfigured.
  if ! command -v postfix >/dev/null; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  fi
  rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || rc=$?
  [ -n "$POLICY_RC" ] && rm -f "$POLICY_RC"
  [ "$rc" = 0 ] || die "apt-get install ${missing[*]} failed (run apt-get update first?)"
fi
if [ -z "$BIN" ]; then command -v go >/dev/null || die "go is not installed (or give --bin PATH)"; fi
OPENDKIM_V=$(opendkim -V 2>&1 || true)
if [ "$ALGO" != rsa ] && ! grep -q ed25519-sha256 <<< "$OPENDKIM_V"; then die "this opendkim cannot sign with Ed25519 (needs 2.11)"; fi
OPENDKIM_VERSION=$(sed -n '1s/.* v//p' <<< "$OPENDKIM_V")

start_work sluice-postfix
# Postfix, Dovecot and OpenDKIM run as their own users: they must be able to
# reach their files under the work directory.
chmod 755 "$WORK"
PFCONF=$WORK/postfix/conf
QUEUE=$WORK/postfix/queue
POSTFIX_UP=0
POSTFWD_PIDFILE=$WORK/postfwd/postfwd.pid

master_pid() { sed -n '1s/ //gp' "$QUEUE/pid/master.pid" 2>/dev/null || true; }

# stop_daemons (at exit, see bench/lib.sh): Postfix's master and postfwd run
# as daemons, not below this script.
stop_daemons() {
  local m
  if [ "${POSTFIX_UP:-0}" = 1 ]; then
    m=$(master_pid)
    postfix -c "$PFCONF" stop >/dev/null 2>&1 || true
    [ -n "$m" ] && stop_tree "$m"
  fi
  if [ -s "${POSTFWD_PIDFILE:-}" ]; then stop_tree "$(tr -d ' \n' < "$POSTFWD_PIDFILE")"; fi
}

# render TEMPLATE OUT: the template with @NAME@ replaced.
render() {
  sed -e "s|@WORK@|$WORK|g" -e "s|@SUB_PORT@|$SUB_PORT|g" -e "s|@SINK_PORT@|$SINK_PORT|g" \
    -e "s|@MILTERS@|$MILTERS|g" -e "s|@POLICY@|$POLICY_RESTRICTION|g" \
    -e "s|@DKIM_ALGO@|${RENDER_ALGO:-}|g" -e "s|@DKIM_SIGNALG@|${RENDER_SIGNALG:-}|g" \
    -e "s|@MILTER_SOCKET@|${RENDER_SOCKET:-}|g" "$TEMPLATES/$1" > "$2"
}

# --- build -------------------------------------------------------------------
build_sluice

free_port SUB_PORT
free_port SINK_PORT
case "$ALGO" in both) ALGOS="rsa ed25519" ;; *) ALGOS=$ALGO ;; esac
# One OpenDKIM per algorithm: opendkim 2.11 signs every key with the one
# SignatureAlgorithm of its configuration, so signing with both takes two
# milters (Postfix calls them in turn).
declare -A MILTER_SOCKET MILTER_WHERE
MILTERS=""
for a in $ALGOS; do
  if [ "$MILTER" = unix ]; then
    MILTER_WHERE[$a]=$WORK/milter/opendkim-$a.sock
    MILTER_SOCKET[$a]=local:${MILTER_WHERE[$a]}
    MILTERS+="${MILTERS:+,}unix:${MILTER_WHERE[$a]}"
  else
    free_port port
    MILTER_WHERE[$a]=$port
    MILTER_SOCKET[$a]=inet:$port@127.0.0.1
    MILTERS+="${MILTERS:+,}inet:127.0.0.1:$port"
  fi
done
free_port POLICY_PORT
POLICY_RESTRICTION=""
[ "$POLICY" = postfwd ] && POLICY_RESTRICTION="check_policy_service inet:127.0.0.1:$POLICY_PORT"

# --- TLS certificate and logins ---------------------------------------------
mkdir -p "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=mail.example.test -addext subjectAltName=DNS:mail.example.test \
  -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null || die "openssl could not make a certificate"
chmod 600 "$WORK/tls/key.pem"

# Logins: bench1..N for the load, quota@ for the check of the policy daemon.
# With argon2id the hashes are made by `sluice user add`, the very strings
# Sluice's user file holds; Dovecot verifies them with libsodium.
log "adding $NUSERS logins ($PASS_SCHEME)"
mkdir -p "$WORK/dovecot/run" "$WORK/dovecot/state" "$WORK/users-data" "$WORK/postfix"
printf 'hostname = "mail.example.test"\ndata_dir = "%s"\n' "$WORK/users-data" > "$WORK/users.toml"
: > "$WORK/users.txt"
: > "$WORK/postfix/sender_login"
: > "$WORK/dovecot/users"
for i in $(seq "$NUSERS") quota; do
  if [ "$i" = quota ]; then login=quota@example.test; else login=bench$i@example.test; fi
  pw=$(new_password)
  if [ "$PASS_SCHEME" = argon2id ]; then
    echo "$pw" | "$SLUICE" user add "$login" --password-stdin --config "$WORK/users.toml" >/dev/null
  else
    echo "$login:$(doveadm pw -s SHA512-CRYPT -p "$pw")::::::" >> "$WORK/dovecot/users"
  fi
  if [ "$i" = quota ]; then echo "$login $pw" > "$WORK/quota-user.txt"; else echo "$login $pw" >> "$WORK/users.txt"; fi
  echo "$login $login" >> "$WORK/postfix/sender_login"
done
if [ "$PASS_SCHEME" = argon2id ]; then
  jq -r '.users[] | "\(.address):{ARGON2ID}\(.hash)::::::"' "$WORK/users-data/users.json" > "$WORK/dovecot/users"
fi
head -1 "$WORK/users.txt" > "$WORK/first-user.txt"
chown root:dovecot "$WORK/dovecot/users"
chmod 640 "$WORK/dovecot/users"

# --- DKIM keys: one OpenDKIM directory per algorithm ------------------------
mkdir -p "$WORK/milter"
chown opendkim:postfix "$WORK/milter"
chmod 750 "$WORK/milter"
for a in $ALGOS; do
  dir=$WORK/opendkim-$a
  mkdir -p "$dir"
  if [ "$ALGO" = both ]; then sel=bench-$a; else sel=bench; fi
  key=$dir/$sel.private
  if [ "$a" = rsa ]; then
    opendkim-genkey -b 2048 -d example.test -s "$sel" -D "$dir" || die "opendkim-genkey failed"
    RENDER_SIGNALG=rsa-sha256
  else
    openssl genpkey -algorithm ed25519 -out "$key" 2>/dev/null || die "openssl could not make an Ed25519 key"
    RENDER_SIGNALG=ed25519-sha256
  fi
  echo "$sel._domainkey.example.test example.test:$sel:$key" > "$dir/keytable"
  echo "*@example.test $sel._domainkey.example.test" > "$dir/signingtable"
  RENDER_ALGO=$a RENDER_SOCKET=${MILTER_SOCKET[$a]} render opendkim.conf.in "$dir/opendkim.conf"
  chown -R opendkim:opendkim "$dir"
  chmod 700 "$dir"
  chmod 600 "$key"
done

# --- configuration -----------------------------------------------------------
mkdir -p "$PFCONF" "$QUEUE" "$WORK/postfix/data" "$WORK/dump"
render main.cf.in "$PFCONF/main.cf"
render master.cf.in "$PFCONF/master.cf"
render dovecot.conf.in "$WORK/dovecot/dovecot.conf"
chown postfix "$WORK/postfix/data"
chown nobody "$WORK/dump"
if [ "$POLICY" = postfwd ]; then
  mkdir -p "$WORK/postfwd"
  render postfwd.cf.in "$WORK/postfwd/postfwd.cf"
  chown nobody "$WORK/postfwd"
fi
postfix -c "$PFCONF" check 2>"$WORK/postfix-check.log" || die "postfix check failed: $(cat "$WORK/postfix-check.log"; tail -5 "$WORK/postfix/maillog" 2>/dev/null)"
doveconf -c "$WORK/dovecot/dovecot.conf" -n >/dev/null 2>"$WORK/doveconf.log" || die "dovecot configuration: $(cat "$WORK/doveconf.log")"

# --- the receiving sink ------------------------------------------------------
# First one that keeps each message (-d), for the checks below; the load
# then goes to one that only counts, as in bench/run.sh.
start_sink() { # extra smtp-sink arguments
  smtp-sink -u nobody "$@" -c "127.0.0.1:$SINK_PORT" 1000 >"$WORK/sink.log" 2>&1 &
  SINK_PID=$!
  PIDS+=("$SINK_PID")
  wait_tcp "$SINK_PORT" "$SINK_PID" || die "smtp-sink did not start: $(cat "$WORK/sink.log")"
}
start_sink -d "$WORK/dump/%H%M%S."
log "smtp-sink on 127.0.0.1:$SINK_PORT"

# --- OpenDKIM, postfwd, Postfix, Dovecot -------------------------------------
OPENDKIM_PIDS=()
for a in $ALGOS; do
  dir=$WORK/opendkim-$a
  opendkim -f -x "$dir/opendkim.conf" >"$WORK/opendkim-$a.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  OPENDKIM_PIDS+=("$pid")
  if [ "$MILTER" = unix ]; then
    poll "$pid" test -e "${MILTER_WHERE[$a]}" || die "opendkim ($a) did not start: $(cat "$WORK/opendkim-$a.log")"
    log "opendkim $OPENDKIM_VERSION on ${MILTER_WHERE[$a]}, signing with $a"
  else
    wait_tcp "${MILTER_WHERE[$a]}" "$pid" || die "opendkim ($a) did not start: $(cat "$WORK/opendkim-$a.log")"
    log "opendkim $OPENDKIM_VERSION on 127.0.0.1:${MILTER_WHERE[$a]}, signing with $a"
  fi
done

POSTFWD_PID=""
if [ "$POLICY" = postfwd ]; then
  # --perfmon: no logging (there may be no syslog daemon); 300 children at
  # most, because every smtpd keeps its policy connection for the session.
  postfwd2 -d -f "$WORK/postfwd/postfwd.cf" --server_socket "tcp:127.0.0.1:$POLICY_PORT" \
    --cache_socket "unix::$WORK/postfwd/cache.sock" --pidfile "$POSTFWD_PIDFILE" \
    -u nobody -g nogroup --perfmon --min_servers 5 --max_servers 300 \
    >"$WORK/postfwd/postfwd.log" 2>&1 || die "postfwd2 did not start: $(cat "$WORK/postfwd/postfwd.log")"
  poll "" test -s "$POSTFWD_PIDFILE" || true
  POSTFWD_PID=$(tr -d ' \n' < "$POSTFWD_PIDFILE" 2>/dev/null || true)
  [ -n "$POSTFWD_PID" ] || die "postfwd2 wrote no pid file: $(cat "$WORK/postfwd/postfwd.log")"
  wait_tcp "$POLICY_PORT" "$POSTFWD_PID" || die "postfwd2 does not listen on 127.0.0.1:$POLICY_PORT"
  log "postfwd2 $(postfwd2 --shortversion 2>/dev/null || true) on 127.0.0.1:$POLICY_PORT: hourly quota per login"
else
  log "no policy daemon (--policy none): no hourly quota"
fi

POSTFIX_UP=1
postfix -c "$PFCONF" start >"$WORK/postfix-start.log" 2>&1 ||
  die "postfix did not start: $(cat "$WORK/postfix-start.log"; tail -5 "$WORK/postfix/maillog" 2>/dev/null)"
MASTER_PID=$(master_pid)
[ -n "$MASTER_PID" ] || die "postfix started but wrote no $QUEUE/pid/master.pid"

dovecot -F -c "$WORK/dovecot/dovecot.conf" >"$WORK/dovecot/stderr.log" 2>&1 &
DOVECOT_PID=$!
PIDS+=("$DOVECOT_PID")
poll "$DOVECOT_PID" test -e "$QUEUE/private/auth" ||
  die "dovecot did not start: $(cat "$WORK/dovecot/stderr.log" "$WORK/dovecot/dovecot.log" 2>/dev/null | tail -5)"
wait_tcp "$SUB_PORT" "$MASTER_PID" || die "postfix does not listen on 127.0.0.1:$SUB_PORT: $(tail -5 "$WORK/postfix/maillog")"
log "postfix $(postconf -c "$PFCONF" -h mail_version) on 127.0.0.1:$SUB_PORT (STARTTLS required, SASL by dovecot $(dovecot --version | cut -d' ' -f1))"

# queued: messages in this instance's queue.
queued() {
  { find "$QUEUE/maildrop" "$QUEUE/incoming" "$QUEUE/active" "$QUEUE/deferred" "$QUEUE/hold" -type f 2>/dev/null || true; } | wc -l
}
sink_count() { # smtp-sink -c: "sess=N quit=N mesg=N\r"
  tr '\r' '\n' < "$WORK/sink.log" | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2 || true
}
maillog_tail() { tail -5 "$WORK/postfix/maillog" 2>/dev/null | sed 's/^/   /' >&2 || true; }

# --- checks: signing, the sender rule, the quota -----------------------------
# check JSON-FILE USERS-FILE CONDITION WHY [sluice bench flags]: one message
# or a few; stops with the replies and WHY unless the jq CONDITION holds for
# the report.
check() {
  local json=$1 users=$2 cond=$3 why=$4
  shift 4
  sluice_bench "$json" "$users" --concurrency 1 "$@"
  jq -e "$cond" "$json" >/dev/null || { print_replies "$json"; maillog_tail; die "$why"; }
}
log "checking the set-up"
check "$WORK/check-sign.json" "$WORK/first-user.txt" '.accepted == 1' \
  "a message of $(cut -d' ' -f1 "$WORK/first-user.txt") was not accepted" --messages 1
[ "$(wait_drained 30)" != - ] || { maillog_tail; die "the checking message was not delivered to the sink"; }
dump_file() { find "$WORK/dump" -type f -print -quit; }
dumped() { [ -n "$(dump_file)" ]; }
poll "" dumped || die "smtp-sink kept no message in $WORK/dump"
DUMP=$(dump_file)
# The header, folded lines joined.
HEADER=$(tr -d '\r' < "$DUMP" | sed '/^$/,$d' | sed -e ':a' -e '$!N;s/\n[ \t]\+/ /;ta' -e 'P;D')
for a in $ALGOS; do
  case "$a" in rsa) want=rsa-sha256 ;; *) want=ed25519-sha256 ;; esac
  grep -q "^DKIM-Signature:.* a=$want;" <<< "$HEADER" || die "the delivered message has no $want DKIM-Signature (OpenDKIM did not sign): $(grep -i '^dkim' "$DUMP" || true)"
done
SIGNATURES=$(tr -d '\r' < "$DUMP" | grep -c '^DKIM-Signature:' || true)
log "  signed: $SIGNATURES DKIM-Signature ($ALGOS)"

# A login sending as another login's address: Postfix must refuse it, 553 5.7.1.
second=$(sed -n 2p "$WORK/users.txt" | cut -d' ' -f1)
check "$WORK/check-sender.json" "$WORK/first-user.txt" \
  '.rejected == 1 and ([.replies[] | select(.class == "rejected" and .code == 553 and .enhanced == "5.7.1")] | length == 1)' \
  "a sender the login does not own was not refused with 553 5.7.1 (smtpd_sender_login_maps)" \
  --messages 1 --from "${second:-nobody@example.test}"
log "  sender not owned by the login: $(jq -r '.replies[] | select(.class == "rejected") | "\(.code) \(.enhanced) \(.text)"' "$WORK/check-sender.json")"

if [ "$POLICY" = postfwd ]; then
  # quota@example.test may send 2 an hour (bench/postfix/postfwd.cf.in).
  check "$WORK/check-quota.json" "$WORK/quota-user.txt" \
    '.accepted == 2 and .deferred == 1 and ([.replies[] | select(.class == "deferred" and .code == 450 and .enhanced == "4.7.1")] | length == 1)' \
    "the third message of quota@example.test (2 an hour) was not deferred with 450 4.7.1 (postfwd)" --messages 3
  log "  hourly quota: $(jq -r '.replies[] | select(.class == "deferred") | "\(.code) \(.enhanced) \(.text)"' "$WORK/check-quota.json")"
fi
[ "$(wait_drained 30)" != - ] || { maillog_tail; die "the checking messages were not delivered to the sink"; }

# The sink for the load: counts only.
stop_proc "$SINK_PID"
start_sink

# --- CPU ---------------------------------------------------------------------
# cpu_ticks: "postfix opendkim dovecot postfwd" clock ticks (user+system)
# used so far by each daemon (all opendkims together) and every process below
# it, reaped ones included (see tree_ticks in bench/lib.sh), so that an smtpd
# or cleanup that exits during a run still counts.
cpu_ticks() { tree_ticks "$MASTER_PID" "${OPENDKIM_PIDS[*]}" "$DOVECOT_PID" "$POSTFWD_PID"; }

warm_up
LOAD_BEFORE=$(loadavg)
bench_run() { # NAME CONCURRENCY REUSE
  local json=$WORK/$1.json t0 t1 q drained total split
  t0=$(cpu_ticks)
  load_run "$@"
  q=$(queued)
  drained=$(wait_drained "$DRAIN_WAIT")
  t1=$(cpu_ticks) # after the drain: the CPU of accepting and of delivering
  # ms per accepted message: the total and each daemon's share.
  read -r total split < <(per_msg "$t0" "$t1" "$(jq .accepted "$json")")
  add_row "$1" "$json" "$total" "$split" "$q" "$drained"
}

for c in $CONCURRENCY; do bench_run "c$c-reuse$REUSE" "$c" "$REUSE"; done
if [ "$REUSE1_CONCURRENCY" -gt 0 ]; then bench_run "c$REUSE1_CONCURRENCY-reuse1" "$REUSE1_CONCURRENCY" 1; fi

MAILQ=$(postqueue -c "$PFCONF" -p 2>&1 | tail -1)
sleep 0.5 # smtp-sink writes its count line as messages come
DELIVERED=$(sink_count)
SENT_LOG=$(grep -c ' status=sent ' "$WORK/postfix/maillog" || true)
DEFERRED_LOG=$(grep -c ' status=deferred ' "$WORK/postfix/maillog" || true)
WARNS=$(grep -cE ' (warning|error|fatal|panic): ' "$WORK/postfix/maillog" || true)
DOVECOT_WARNS=$(grep -ciE ' (warning|error|fatal|panic): ' "$WORK/dovecot/dovecot.log" 2>/dev/null || true)

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
POLICY_TEXT="no policy daemon"
[ "$POLICY" = postfwd ] && POLICY_TEXT="postfwd $(postfwd2 --shortversion 2>/dev/null || true) hourly quota per login (check_policy_service at end of data)"
{
  echo "# sluice bench against Postfix + OpenDKIM, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Postfix $(postconf -c "$PFCONF" -h mail_version), OpenDKIM $OPENDKIM_VERSION, Dovecot $(dovecot --version | cut -d' ' -f1) (SASL, $PASS_SCHEME hashes, auth cache on), $POLICY_TEXT;"
  echo "client $("$SLUICE" version); $(machine)."
  echo "DKIM $ALGO (OpenDKIM milter on a $MILTER socket, relaxed/relaxed); STARTTLS required (ECDSA P-256 certificate), login must own the sender (reject_sender_login_mismatch);"
  echo "$SIZE-byte bodies, 1 recipient, $DURATION per run; $NUSERS logins round-robin; relayhost: a local smtp-sink; client, servers and sink share the machine"
  echo "(1-minute load average $LOAD_BEFORE before the first run, $(loadavg) after the last)."
  echo
  table_head "server CPU ms/msg" "postfix / opendkim / dovecot / postfwd ms/msg" "queued at end" "drained in"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "msgs/s: accepted messages per second. data: end of DATA to the 250 (milter signing, policy check, queue file fsync)."
  echo "server CPU ms/msg: CPU time of the Postfix processes (master and all it started), opendkim, dovecot (and its auth processes) and postfwd (and its children)"
  echo "from the start of the run until the queue drained, per accepted message; then the same split by daemon."
  echo "queued at end: files in the instance's maildrop, incoming, active, deferred and hold queues when the run ended; drained in: until there were none (limit ${DRAIN_WAIT}s)."
  echo
  echo "At the end: \`postqueue -p\`: $MAILQ; delivered to the sink: $DELIVERED; maillog: $SENT_LOG status=sent, $DEFERRED_LOG status=deferred, $WARNS warning/error lines; dovecot: $DOVECOT_WARNS warning/error lines; $SIGNATURES DKIM-Signature per message (checked on the first)."
} | publish "$STAMP-postfix-$ALGO" postfix-latest.md "$WORK/postfix/maillog" ' (warning|error|fatal|panic): '
