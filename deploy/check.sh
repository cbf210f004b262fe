#!/usr/bin/env bash
# Checks every deployment file that Sluice ships, with the tools that run on
# these machines (no container engine and no cluster run here, so the image,
# the compose file and the manifests are checked statically):
#
#   1. build      go build ./cmd/sluice, `sluice version`
#   2. systemd    systemd-analyze verify of deploy/systemd/sluice.service in a
#                 scratch root that holds the built binary; its offline
#                 security exposure; sysusers.d and tmpfiles.d snippets
#                 applied to the scratch root
#   3. toml       every shipped configuration (the ConfigMap's too) parses,
#                 uses only keys of sluice.example.toml with their types
#   4. config     the same files loaded by the built binary itself
#                 (`sluice config check` when it has it)
#   5. docker     deploy/docker/Dockerfile parsed line by line: known
#                 instructions, multi-stage, CGO_ENABLED=0, non-root USER,
#                 EXPOSE, exec-form ENTRYPOINT/CMD, the ignore file
#   6. compose    deploy/compose/compose.yaml parsed (PyYAML): services,
#                 volumes, mounts, healthcheck, grace period, ports
#   7. kubernetes deploy/kubernetes/*.yaml parsed (PyYAML) and checked per
#                 kind and across files; decoded strictly into the k8s.io/api
#                 types (a Go module of its own); `kubectl kustomize` when
#                 kubectl is installed
#   8. docs       a page in docs/commands/ for every command `sluice help` lists
#
# Needs: go; Debian packages systemd (systemd-analyze, systemd-sysusers,
# systemd-tmpfiles) and python3-yaml (with python3 >= 3.11 for tomllib).
# Usage: bash deploy/check.sh   (from anywhere). Exits 1 if any check failed.

set -u
cd "$(dirname "$0")/.." || exit 1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAILED=0
PASSED=0

pass() { PASSED=$((PASSED + 1)); echo "ok    $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL  $*"; }
section() { echo; echo "== $*"; }

# fold NAME COMMAND...: runs a checker that prints "ok ..." and "FAIL ..."
# lines, shows them (not its own summary) and adds them to our counts; one
# that fails with no FAIL line counts as one failure.
fold() {
	local name=$1 out rc f
	shift
	out=$("$@" 2>&1)
	rc=$?
	echo "$out" | grep -v -e ' passed, .* failed$' -e '^exit status'
	PASSED=$((PASSED + $(echo "$out" | grep -c '^ok ')))
	f=$(echo "$out" | grep -c '^FAIL')
	FAILED=$((FAILED + f))
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		fail "$name exited $rc"
	fi
}
run_py() { fold "check_deploy.py $1" "$PY" deploy/check_deploy.py "$1"; }
# The manifests decoded strictly into the k8s.io/api types.
schemacheck() { (cd deploy/kubernetes/schemacheck && go run . ../*.yaml); }

section "tools"
for t in go systemd-analyze systemd-sysusers systemd-tmpfiles; do
	if command -v "$t" >/dev/null 2>&1; then
		pass "$t is installed"
	else
		case $t in
		go) fail "go is not installed" ;;
		*) fail "$t is not installed (Debian package systemd)" ;;
		esac
	fi
done
PY=""
for p in /usr/bin/python3 python3; do
	if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import yaml, tomllib' 2>/dev/null; then
		PY=$p
		break
	fi
done
if [ -n "$PY" ]; then
	pass "$PY has yaml and tomllib"
else
	fail "no python3 >= 3.11 with PyYAML (Debian packages python3, python3-yaml)"
fi

section "1. build"
BIN=$TMP/bin/sluice
if command -v go >/dev/null 2>&1 && go build -o "$BIN" ./cmd/sluice 2>"$TMP/build.err"; then
	pass "go build ./cmd/sluice"
	if v=$("$BIN" version 2>&1); then
		pass "sluice version: $v"
	else
		fail "sluice version: $v"
	fi
else
	fail "go build ./cmd/sluice: $(cat "$TMP/build.err" 2>/dev/null)"
	BIN=""
fi

section "2. systemd"
UNIT=deploy/systemd/sluice.service
if command -v systemd-analyze >/dev/null 2>&1; then
	# verify checks that ExecStart's program exists and is executable, and
	# needs the standard targets: a scratch root with both.
	R=$TMP/root
	mkdir -p "$R/usr/local/bin" "$R/etc/systemd/system" "$R/bin" "$R/usr/lib/systemd"
	cp -r /usr/lib/systemd/system "$R/usr/lib/systemd/"
	if [ -n "$BIN" ]; then cp "$BIN" "$R/usr/local/bin/sluice"; else printf '#!/bin/sh\n' >"$R/usr/local/bin/sluice"; fi
	chmod 0755 "$R/usr/local/bin/sluice"
	cp /bin/kill "$R/bin/kill"
	cp "$UNIT" "$R/etc/systemd/system/sluice.service"
	exec_start=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$UNIT")
	[ "$exec_start" = /usr/local/bin/sluice ] && pass "$UNIT: ExecStart is /usr/local/bin/sluice" || fail "$UNIT: ExecStart is $exec_start, check.sh expects /usr/local/bin/sluice"
	# verify exits 0 on unknown keys and bad values (it only warns), so any
	# output is a failure.
	out=$(systemd-analyze verify --man=no --generators=no --root="$R" sluice.service 2>&1)
	rc=$?
	if [ $rc -eq 0 ] && [ -z "$out" ]; then
		pass "systemd-analyze verify $UNIT: no warnings"
	else
		fail "systemd-analyze verify $UNIT (exit $rc): $out"
	fi
	out=$(systemd-analyze security --offline=yes --root="$R" --threshold=20 sluice.service 2>&1)
	rc=$?
	score=$(echo "$out" | sed -n 's/.*Overall exposure level for sluice.service: \([0-9.]*\).*/\1/p')
	if [ $rc -eq 0 ] && [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
		pass "systemd-analyze security --offline $UNIT: exposure $score (at most 2.0)"
	else
		fail "systemd-analyze security --offline $UNIT: exposure ${score:-unknown} (want at most 2.0, exit $rc)"
	fi
	for key in "User=sluice" "ProtectSystem=strict" "ProtectHome=yes" "PrivateTmp=yes" "NoNewPrivileges=yes" \
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE" "AmbientCapabilities=CAP_NET_BIND_SERVICE" \
		"ReadWritePaths=/var/lib/sluice" 'ExecReload=/bin/kill -HUP $MAINPID' "Restart=on-failure" "LimitNOFILE="; do
		grep -qF -- "$key" "$UNIT" && pass "$UNIT: $key" || fail "$UNIT: missing $key"
	done
	# TimeoutStopSec must cover the configuration's shutdown_timeout.
	stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$UNIT")
	sd=$(sed -n 's/^shutdown_timeout = "\([0-9]*\)s"$/\1/p' deploy/systemd/sluice.toml)
	if [ -n "$stop" ] && [ -n "$sd" ] && [ "$stop" -ge $((sd + 10)) ]; then
		pass "$UNIT: TimeoutStopSec=${stop}s covers shutdown_timeout ${sd}s + 10s"
	else
		fail "$UNIT: TimeoutStopSec=${stop:-?}s does not cover shutdown_timeout ${sd:-?}s + 10s"
	fi
	# sysusers.d and tmpfiles.d: apply them to a scratch root.
	S=$TMP/sysroot
	mkdir -p "$S/etc/sysusers.d" "$S/etc/tmpfiles.d"
	cp deploy/systemd/sluice.sysusers "$S/etc/sysusers.d/sluice.conf"
	cp deploy/systemd/sluice.tmpfiles "$S/etc/tmpfiles.d/sluice.conf"
	out=$(systemd-sysusers --root="$S" 2>&1)
	rc=$?
	if [ $rc -eq 0 ] && grep -q '^sluice:' "$S/etc/passwd" 2>/dev/null && ! echo "$out" | grep -qiE 'ignor|fail|invalid|error'; then
		pass "systemd-sysusers deploy/systemd/sluice.sysusers: creates user sluice"
	else
		fail "systemd-sysusers deploy/systemd/sluice.sysusers (exit $rc): $out"
	fi
	out=$(systemd-tmpfiles --root="$S" --create 2>&1)
	rc=$?
	if [ $rc -eq 0 ] && [ -d "$S/var/lib/sluice" ] && [ -d "$S/etc/sluice" ] && [ "$(stat -c %a "$S/var/lib/sluice")" = 700 ] && [ -z "$out" ]; then
		pass "systemd-tmpfiles deploy/systemd/sluice.tmpfiles: creates /var/lib/sluice (0700) and /etc/sluice"
	else
		fail "systemd-tmpfiles deploy/systemd/sluice.tmpfiles (exit $rc): $out"
	fi
else
	fail "systemd checks skipped: systemd-analyze missing (apt-get install systemd)"
fi

if [ -n "$PY" ]; then
	section "3. toml"
	run_py toml
else
	fail "toml, docker, compose and kubernetes checks skipped: no python3 with PyYAML"
fi

section "4. config (loaded by the built binary)"
if [ -n "$BIN" ] && [ -n "$PY" ]; then
	mkdir -p "$TMP/conf" "$TMP/data"
	"$PY" deploy/check_deploy.py write-tomls "$TMP/conf" >"$TMP/conf.list"
	# `sluice config check FILE` when the binary has it; otherwise a
	# subcommand that loads the configuration and touches nothing but the
	# data dir, redirected to a scratch directory.
	if "$BIN" config check "$(head -1 "$TMP/conf.list" | cut -f1)" 2>&1 | grep -q 'unknown command'; then
		mode=fallback
	else
		mode=check
	fi
	while IFS=$'\t' read -r file name; do
		if [ $mode = check ]; then
			out=$(env -u SLUICE_HOSTNAME -u SLUICE_SUBMISSION_LISTEN -u SLUICE_SUBMISSION_LISTEN_TLS -u SLUICE_HTTP_LISTEN -u SLUICE_REDIS_URL \
				SLUICE_DATA_DIR="$TMP/data" "$BIN" config check "$file" 2>&1)
			how="sluice config check"
		else
			out=$(env -u SLUICE_HOSTNAME -u SLUICE_SUBMISSION_LISTEN -u SLUICE_SUBMISSION_LISTEN_TLS -u SLUICE_HTTP_LISTEN -u SLUICE_REDIS_URL \
				SLUICE_DATA_DIR="$TMP/data" "$BIN" suppress list --config "$file" 2>&1)
			how="sluice suppress list --config (loads the config; no 'config check' yet)"
		fi
		rc=$?
		if [ $rc -eq 0 ]; then
			pass "$name: loads in sluice ($how)"
		else
			fail "$name: $how: $(echo "$out" | sed "s#$file#$name#g" | head -3)"
		fi
	done <"$TMP/conf.list"
else
	fail "config load skipped: no binary or no python3"
fi

if [ -n "$PY" ]; then
	section "5. docker"
	run_py dockerfile
	section "6. compose"
	run_py compose
	section "7. kubernetes"
	run_py kubernetes
fi
if command -v go >/dev/null 2>&1; then
	fold "go run deploy/kubernetes/schemacheck" schemacheck
fi
if command -v kubectl >/dev/null 2>&1; then
	if out=$(kubectl kustomize deploy/kubernetes 2>&1); then
		pass "kubectl kustomize deploy/kubernetes: $(echo "$out" | grep -c '^kind:') objects"
	else
		fail "kubectl kustomize deploy/kubernetes: $out"
	fi
else
	echo "skip  kubectl kustomize: kubectl is not installed (optional)"
fi

section "8. docs"
if [ -n "$BIN" ]; then
	cmds=$("$BIN" help 2>/dev/null | sed -n 's/^  \([a-z][a-z]*\)  .*/\1/p')
	for c in $cmds; do
		[ -f "docs/commands/$c.md" ] && pass "docs/commands/$c.md documents 'sluice $c'" || fail "docs/commands/$c.md is missing for 'sluice $c'"
	done
	[ -f docs/operator.md ] && pass "docs/operator.md exists" || fail "docs/operator.md is missing"
fi

echo
echo "deploy/check.sh: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
