#!/usr/bin/env bash
# Private PostgreSQL cluster for `make run` and `make test`.
#
#   pg.sh start   start (or reuse) the cluster, ensure database "latchkey", print its URL
#   pg.sh url     print the URL (whether or not the cluster runs)
#   pg.sh stop    stop the cluster (fast mode); a no-op when it is not running
#   pg.sh status  exit 0 when the cluster runs, 1 otherwise
#   pg.sh clients print how many client connections are open (0 when not running)
#
# Environment:
#   LATCHKEY_PG_DIR   state directory (default <repo>/.local/pg); the cluster lives in its data/
#                     subdirectory, next to the lock file and the server log
#   LATCHKEY_PG_PORT  TCP port on 127.0.0.1 (default 55432)
#
# Only the URL goes to stdout, so callers can write  url=$(deploy/local/pg.sh start).
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/../.." && pwd)

state_dir=${LATCHKEY_PG_DIR:-$repo/.local/pg}
port=${LATCHKEY_PG_PORT:-55432}
data_dir=$state_dir/data
log_file=$state_dir/postgres.log
initdb_log=$state_dir/initdb.log
lock_file=$state_dir/lock
db_name=latchkey
pg_user=latchkey-pg # only used when we are root

# Keep the caller's stdout on fd 3 for the URL and send everything else (ours and
# every tool's) to stderr, so no stray line can corrupt $(pg.sh start).
exec 3>&1 1>&2

log() { printf 'pg.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

url() { printf 'postgres://postgres@127.0.0.1:%s/%s?sslmode=disable\n' "$port" "$db_name"; }

[[ $port =~ ^[0-9]+$ ]] || die "LATCHKEY_PG_PORT must be a number, got '$port'"

# --- finding (or installing) the server binaries ------------------------------

pg_bin=
find_pg_bin() {
	local d
	# Debian/Ubuntu put the binaries outside PATH, one directory per major version;
	# take the newest so a machine with several versions behaves predictably.
	# (Version-sort: a plain glob would put 9 after 15.)
	d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n1)
	if [[ -n $d && -x $d/initdb && -x $d/pg_ctl ]]; then
		pg_bin=$d
		return 0
	fi
	if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
		pg_bin=$(dirname "$(command -v pg_ctl)")
		return 0
	fi
	return 1
}

install_pg() {
	[[ $EUID -eq 0 ]] || die "PostgreSQL server binaries not found; install PostgreSQL (e.g. apt-get install postgresql) or run this script as root"
	command -v apt-get >/dev/null || die "PostgreSQL server binaries not found and apt-get is not available; install PostgreSQL by hand"
	log "PostgreSQL server binaries not found; installing them with apt-get (takes a minute)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# Prefer the version this project is developed against, but any packaged one works.
	apt-get install -y -qq --no-install-recommends postgresql-15 ||
		apt-get install -y -qq --no-install-recommends postgresql
}

# --- running as the right user --------------------------------------------------

# PostgreSQL refuses to run as root, so as root we hand the cluster to a dedicated
# system user. Any other user runs it directly.
as_pg() {
	# Close fd 3 (the caller's stdout) and 9 (the lock): the postmaster would
	# otherwise inherit them, keeping $(pg.sh start) open and the lock held forever.
	if [[ $EUID -eq 0 ]]; then
		(cd "$state_dir" && runuser -u "$pg_user" -- "$@") 3>&- 9>&-
	else
		(cd "$state_dir" && "$@") 3>&- 9>&-
	fi
}

ensure_pg_user() {
	[[ $EUID -eq 0 ]] || return 0
	if ! id -u "$pg_user" >/dev/null 2>&1; then
		log "creating system user $pg_user to run PostgreSQL (it refuses to run as root)"
		useradd --system --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin --user-group "$pg_user"
	fi
	# The server must reach its data directory; every ancestor needs search (x)
	# permission for that user. Report the first one that blocks it rather than
	# letting initdb fail with a vaguer message.
	local d=$state_dir
	local blocked=
	while [[ $d != / ]]; do
		d=$(dirname "$d")
		if ! runuser -u "$pg_user" -- test -x "$d" 2>/dev/null; then
			blocked=$d
		fi
	done
	if [[ -n $blocked ]]; then
		die "user $pg_user cannot traverse $blocked (needed to reach $state_dir).
  Fix with e.g. 'chmod o+x $blocked', or set LATCHKEY_PG_DIR to a directory under a traversable path (e.g. /var/tmp/latchkey-pg)."
	fi
	chown "$pg_user:" "$state_dir"
	if [[ -d $data_dir && $(stat -c %U "$data_dir") != "$pg_user" ]]; then
		# A cluster made earlier by another user: hand it over rather than start afresh.
		log "handing existing $data_dir over to $pg_user"
		chown -R "$pg_user:" "$data_dir"
	fi
	if [[ -e $log_file ]]; then chown "$pg_user:" "$log_file"; fi
}

# --- cluster state ------------------------------------------------------------------

# Prints the postmaster's PID when this cluster runs. A postmaster.pid left by a
# killed machine may name a PID that now belongs to an unrelated process, so
# "the PID is alive" is not enough: the postmaster's working directory is its data
# directory, which identifies it exactly.
running_pid() {
	local pid cwd
	[[ -f $data_dir/postmaster.pid ]] || return 1
	pid=$(head -n1 "$data_dir/postmaster.pid" 2>/dev/null || true)
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -d /proc/$pid ]] || return 1
	if cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null); then
		[[ $cwd == "$(cd "$data_dir" && pwd -P)" ]] || return 1
	else
		# Not allowed to look (another user's process): fall back to the name.
		[[ $(cat "/proc/$pid/comm" 2>/dev/null) == postgres ]] || return 1
	fi
	echo "$pid"
}

# Port the running server listens on, from line 4 of postmaster.pid.
running_port() { sed -n 4p "$data_dir/postmaster.pid" 2>/dev/null; }

remove_stale_pidfile() {
	if [[ -f $data_dir/postmaster.pid ]] && ! running_pid >/dev/null; then
		# pg_ctl itself would trust a recycled PID (and "stop" would signal it).
		log "removing stale $data_dir/postmaster.pid (its process is gone)"
		rm -f "$data_dir/postmaster.pid"
	fi
}

init_cluster() {
	log "initialising a new cluster in $data_dir"
	local locale=C.UTF-8
	if ! locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then
		locale=C
	fi
	if ! as_pg "$pg_bin/initdb" -D "$data_dir" --auth=trust --username=postgres -E UTF8 \
		--locale="$locale" >>"$initdb_log" 2>&1; then
		if [[ $locale == C ]]; then
			cat "$initdb_log" >&2
			die "initdb failed"
		fi
		log "initdb with locale $locale failed; retrying with locale C"
		rm -rf "$data_dir"
		as_pg "$pg_bin/initdb" -D "$data_dir" --auth=trust --username=postgres -E UTF8 \
			--locale=C >>"$initdb_log" 2>&1 || { cat "$initdb_log" >&2; die "initdb failed"; }
	fi
	# Our settings live in their own file so a restart can rewrite them (e.g. a new
	# port) without editing initdb's postgresql.conf again.
	echo "include_if_exists = 'latchkey.conf'" >>"$data_dir/postgresql.conf"
}

write_settings() {
	# Written on every start so LATCHKEY_PG_PORT changes take effect. fsync stays on:
	# `make run` keeps data across runs and a crash must not corrupt it.
	local tmp=$data_dir/latchkey.conf.tmp
	cat >"$tmp" <<-EOF
		# Managed by deploy/local/pg.sh; rewritten on every start.
		listen_addresses = '127.0.0.1'
		port = $port
		# TCP only: no socket file in /tmp or /var/run to collide with a system cluster.
		unix_socket_directories = ''
		# The test suite runs many packages in parallel, each with a pool.
		max_connections = 200
		shared_buffers = 128MB
		# Checkpoints less often than the default: tests create and drop a lot.
		max_wal_size = 1GB
		timezone = 'UTC'
		log_timezone = 'UTC'
		log_line_prefix = '%m [%p] %q%u@%d '
		log_min_duration_statement = 1000
	EOF
	if [[ $EUID -eq 0 ]]; then chown "$pg_user:" "$tmp"; fi
	mv -f "$tmp" "$data_dir/latchkey.conf"
}

wait_ready() {
	local i
	for ((i = 0; i < 120; i++)); do
		if "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres 3>&- 9>&-; then
			return 0
		fi
		sleep 0.5
	done
	tail -n 30 "$log_file" >&2 || true
	die "PostgreSQL did not accept connections on 127.0.0.1:$port within 60s (log: $log_file)"
}

ensure_database() {
	local psql=("$pg_bin/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1)
	if [[ $("${psql[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db_name'") != 1 ]]; then
		log "creating database $db_name"
		"$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db_name"
	fi
}

cmd_start() {
	mkdir -p "$state_dir"
	# Serialise concurrent starts (parallel test packages, `make run` next to `make
	# test`): without this two initdb or two pg_ctl start runs could race.
	exec 9>>"$lock_file"
	flock -w 600 9 || die "timed out waiting for the lock $lock_file"

	find_pg_bin || { install_pg && find_pg_bin; } || die "PostgreSQL server binaries still not found after installing"
	ensure_pg_user

	if pid=$(running_pid); then
		local rport
		rport=$(running_port)
		if [[ $rport != "$port" ]]; then
			die "the cluster in $data_dir already runs on port $rport, not $port (LATCHKEY_PG_PORT); run 'pg.sh stop' first"
		fi
		log "already running (pid $pid) on 127.0.0.1:$port"
	else
		if [[ ! -s $data_dir/PG_VERSION ]]; then
			# A half-made directory (initdb interrupted) is useless; start afresh.
			rm -rf "$data_dir"
			init_cluster
		fi
		remove_stale_pidfile
		write_settings
		log "starting PostgreSQL ($pg_bin) on 127.0.0.1:$port; log: $log_file"
		if ! as_pg "$pg_bin/pg_ctl" start -D "$data_dir" -l "$log_file" -w -t 60 -s; then
			tail -n 30 "$log_file" >&2 || true
			die "pg_ctl start failed (log: $log_file)"
		fi
	fi
	wait_ready
	ensure_database
	url >&3
}

cmd_stop() {
	[[ -d $state_dir ]] || { log "not running"; return 0; }
	exec 9>>"$lock_file"
	flock -w 600 9 || die "timed out waiting for the lock $lock_file"
	if ! running_pid >/dev/null; then
		remove_stale_pidfile
		log "not running"
		return 0
	fi
	find_pg_bin || die "PostgreSQL binaries not found"
	log "stopping PostgreSQL"
	as_pg "$pg_bin/pg_ctl" stop -D "$data_dir" -m fast -w -t 60 -s
}

# Lets run.sh leave the cluster running when someone else (a `make test` in another
# terminal) is using it, instead of pulling it from under them.
cmd_clients() {
	if ! running_pid >/dev/null || ! find_pg_bin; then
		echo 0 >&3
		return 0
	fi
	"$pg_bin/psql" -X -q -tA -h 127.0.0.1 -p "$(running_port)" -U postgres -d postgres -c \
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()" >&3
}

cmd_status() {
	local pid
	if pid=$(running_pid); then
		log "running (pid $pid) on 127.0.0.1:$(running_port), data $data_dir"
		return 0
	fi
	log "not running"
	return 1
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
clients) cmd_clients ;;
url) url >&3 ;;
*)
	echo "usage: $0 start|stop|status|url|clients" >&2
	exit 2
	;;
esac
