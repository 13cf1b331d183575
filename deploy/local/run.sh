#!/usr/bin/env bash
# shellcheck disable=SC2317 # cleanup and on_signal are reached through traps only
# `make run`: the whole service on loopback with nothing set up beforehand.
#
# Brings up the private PostgreSQL cluster (pg.sh) and the maildev SMTP sink
# (maildev.sh), then runs `latchkey dev` (ingress, every worker and an embedded
# NATS JetStream in one process) in the foreground. Ctrl-C stops the service
# first, then maildev, then PostgreSQL if this script was the one that started it
# and no one else (e.g. a `make test` in another terminal) is connected to it.
#
# Every LATCHKEY_* variable that is already set is left alone, so e.g.
#   LATCHKEY_HTTP_ADDR=127.0.0.1:9090 make run
# works (the links in email follow the API's address unless LATCHKEY_PUBLIC_BASE_URL
# is set). Setting LATCHKEY_DATABASE_URL skips the private PostgreSQL cluster, and
# setting LATCHKEY_SMTP_URL skips maildev (you bring your own). `latchkey dev`
# prints the URLs once the API answers.
#
# LATCHKEY_RUN_CMD replaces the command run in the foreground (default: build
# .local/bin/latchkey and exec `latchkey dev`; `go run` would turn Ctrl-C into
# exit status 1); it is a shell command line run from the repo root.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/../.." && pwd)
cd "$repo"

# The build stamps the git revision (`latchkey version`) when git can read the
# checkout; -buildvcs is explicit because some environments set GOFLAGS=-buildvcs=false.
buildvcs=false
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then buildvcs=auto; fi
run_cmd=${LATCHKEY_RUN_CMD:-go build -buildvcs=$buildvcs -o .local/bin/latchkey ./cmd/latchkey \&\& exec .local/bin/latchkey dev}
smtp_port=${LATCHKEY_MAILDEV_SMTP_PORT:-1025}
web_port=${LATCHKEY_MAILDEV_WEB_PORT:-1080}
maildev_log=$repo/.local/maildev.log

log() { printf 'run.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pg_started_here=0
maildev_pid=
app_pid=

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Starts "$@" in the background in its own process group, by switching job control
# on for just this command. Two reasons: a terminal Ctrl-C then reaches only this
# script, which stops things in order (app, then mail sink, then database); and,
# unlike a plain `cmd &` in a script, the child does not start with SIGINT ignored,
# so it can handle the INT we forward.
spawned=
spawn() {
	set -m
	"$@" &
	spawned=$!
	set +m
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	# The app may still be flushing mail during its graceful shutdown, which is why
	# it is stopped (by the signal handlers below) before the sink goes away.
	if [[ -n $app_pid ]] && kill -0 "$app_pid" 2>/dev/null; then
		kill -TERM -- "-$app_pid" 2>/dev/null || true
		wait "$app_pid" 2>/dev/null || true
	fi
	if [[ -n $maildev_pid ]]; then
		log "stopping maildev"
		kill -TERM -- "-$maildev_pid" 2>/dev/null || true
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$maildev_pid" 2>/dev/null || break
			sleep 0.5
		done
		kill -KILL -- "-$maildev_pid" 2>/dev/null || true
		wait "$maildev_pid" 2>/dev/null || true
	fi
	# A cluster that was already running belongs to someone else (a test run, an
	# earlier `make run` in another terminal): leave it be. One we started may
	# have been picked up since (tests reuse a running cluster), so it is only
	# stopped when nobody is connected any more.
	if [[ $pg_started_here == 1 ]]; then
		local clients=0
		for _ in 1 2 3 4 5 6; do
			# The app's own connections may take a moment to go away.
			clients=$("$script_dir/pg.sh" clients 2>/dev/null || echo 0)
			[[ $clients == 0 ]] && break
			sleep 0.5
		done
		if [[ $clients == 0 ]]; then
			log "stopping PostgreSQL (started by this run)"
			"$script_dir/pg.sh" stop || true
		else
			log "leaving PostgreSQL running: $clients other connection(s) use it (stop it with deploy/local/pg.sh stop)"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT

# The app and maildev run in their own process groups (spawn), so a Ctrl-C reaches
# only this script, which forwards it to the app. Before the app is up a signal
# just ends the script, and the EXIT trap undoes what was started so far.
on_signal() {
	local sig=$1
	if [[ -n $app_pid ]]; then
		kill -s "$sig" -- "-$app_pid" 2>/dev/null || true
	else
		exit $((128 + $(kill -l "$sig")))
	fi
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

mkdir -p "$repo/.local"

# --- PostgreSQL ---------------------------------------------------------------------
if [[ -z ${LATCHKEY_DATABASE_URL:-} ]]; then
	was_running=0
	if "$script_dir/pg.sh" status 2>/dev/null; then was_running=1; fi
	# Recorded before starting so an interrupted start is still cleaned up.
	if [[ $was_running == 0 ]]; then pg_started_here=1; fi
	LATCHKEY_DATABASE_URL=$("$script_dir/pg.sh" start)
else
	log "using LATCHKEY_DATABASE_URL from the environment; not starting the private PostgreSQL"
fi
export LATCHKEY_DATABASE_URL

# --- maildev ----------------------------------------------------------------------------
if [[ -z ${LATCHKEY_SMTP_URL:-} ]]; then
	for p in "$smtp_port" "$web_port"; do
		if port_open "$p"; then
			die "127.0.0.1:$p is already in use (a maildev left from an earlier run?). Stop it, or choose other ports with LATCHKEY_MAILDEV_SMTP_PORT / LATCHKEY_MAILDEV_WEB_PORT"
		fi
	done
	log "starting maildev (SMTP 127.0.0.1:$smtp_port, web 127.0.0.1:$web_port); log: $maildev_log"
	export LATCHKEY_MAILDEV_SMTP_PORT=$smtp_port LATCHKEY_MAILDEV_WEB_PORT=$web_port
	# The log names senders, recipients and subjects: the owner's only.
	install -m 600 /dev/null "$maildev_log"
	spawn "$script_dir/maildev.sh" >"$maildev_log" 2>&1 </dev/null
	maildev_pid=$spawned
	# The first run installs maildev from npm, hence the generous limit.
	for ((i = 0; i < 600; i++)); do
		if port_open "$smtp_port" && port_open "$web_port"; then break; fi
		if ! kill -0 "$maildev_pid" 2>/dev/null; then
			tail -n 20 "$maildev_log" >&2 || true
			die "maildev exited before it was ready (log: $maildev_log)"
		fi
		sleep 0.5
	done
	if ! { port_open "$smtp_port" && port_open "$web_port"; }; then
		die "maildev did not open ports $smtp_port and $web_port within 5 minutes (log: $maildev_log)"
	fi
	export LATCHKEY_SMTP_URL=smtp://127.0.0.1:$smtp_port
	: "${LATCHKEY_DEV_MAILBOX_URL:=http://127.0.0.1:$web_port}"
else
	log "using LATCHKEY_SMTP_URL from the environment; not starting maildev"
fi

# --- the service ----------------------------------------------------------------------
# LATCHKEY_HTTP_ADDR and LATCHKEY_PUBLIC_BASE_URL are left to `latchkey dev`: its
# default address, and links in email that follow the address it listens on.
: "${LATCHKEY_DATA_DIR:=$repo/.local/data}"
: "${LATCHKEY_ADMIN_TOKEN:=latchkey-dev-admin-token}"
: "${LATCHKEY_LOG_FORMAT:=console}"
export LATCHKEY_DATA_DIR LATCHKEY_ADMIN_TOKEN LATCHKEY_LOG_FORMAT
if [[ -n ${LATCHKEY_DEV_MAILBOX_URL:-} ]]; then export LATCHKEY_DEV_MAILBOX_URL; fi
mkdir -p "$LATCHKEY_DATA_DIR"

# Started in the background and waited for, rather than run in the foreground:
# bash defers traps until a foreground command returns, so a TERM sent to this
# script would otherwise never reach the app. `wait` returns early when a trap
# fires; keep waiting until the app has really finished its graceful shutdown.
spawn bash -c "$run_cmd" </dev/null
app_pid=$spawned
while kill -0 "$app_pid" 2>/dev/null; do
	wait "$app_pid" || true
done
# bash keeps the status of a reaped background process; ask for it once the
# app is really gone (the waits above may have been cut short by a trap).
wait "$app_pid" && status=0 || status=$?
app_pid=
exit "$status"
