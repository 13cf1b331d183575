#!/usr/bin/env bash
# SMTP sink with a web mailbox for `make run`: every message the service sends is
# caught and readable in a browser, nothing leaves the machine.
#
# Runs maildev (npm registry) in the foreground, bound to 127.0.0.1 only. It is
# installed on first use into <repo>/.local/maildev; nothing is installed globally.
# Messages are kept in <repo>/.local/maildev/mail, a directory only its owner can
# enter (mode 0700): they carry live reset links, and maildev's own default is a
# folder in the system temporary directory that every user of the machine can read.
# Extra arguments are passed to maildev (see `maildev --help`).
#
# Environment:
#   LATCHKEY_MAILDEV_SMTP_PORT  SMTP port (default 1025)
#   LATCHKEY_MAILDEV_WEB_PORT   web mailbox and REST API port (default 1080)
#   LATCHKEY_MAILDEV_VERSION    maildev version (default: the one in deploy/maildev.version)
#   LATCHKEY_MAILDEV_DIR        install and mail directory (default <repo>/.local/maildev)
#
# REST API (maildev 3.x): GET /api/email lists the messages, DELETE /api/email/all
# empties the box, GET /api/healthz. (maildev 2.x served the same under /email.)
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/../.." && pwd)

# Pinned so every developer gets the same mailbox; bump deliberately. The file is
# the one place that names the version: deploy/compose.yaml builds the same one.
version=${LATCHKEY_MAILDEV_VERSION:-$(tr -d '[:space:]' <"$repo/deploy/maildev.version")}
smtp_port=${LATCHKEY_MAILDEV_SMTP_PORT:-1025}
web_port=${LATCHKEY_MAILDEV_WEB_PORT:-1080}
prefix=${LATCHKEY_MAILDEV_DIR:-$repo/.local/maildev}
mail_dir=$prefix/mail

log() { printf 'maildev.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v node >/dev/null || die "Node.js is required (maildev $version needs node >= 20); install it, e.g. apt-get install nodejs npm"
command -v npm >/dev/null || die "npm is required to install maildev"

installed_version() {
	# The installed package's own manifest is the truth; package.json of the prefix
	# only says what was asked for.
	node -e 'try { process.stdout.write(require(process.argv[1]).version) } catch { }' \
		"$prefix/node_modules/maildev/package.json" 2>/dev/null || true
}

mkdir -p "$prefix"
if [[ $(installed_version) != "$version" ]]; then
	# Two `make run`s (or a run and a test) may get here together; one npm install
	# at a time into the same prefix.
	exec 9>>"$prefix/.install.lock"
	flock -w 600 9 || die "timed out waiting for $prefix/.install.lock"
	if [[ $(installed_version) != "$version" ]]; then
		log "installing maildev@$version into $prefix (first run only)"
		# --loglevel=error keeps npm's notices (and warnings about unrelated user
		# config) off the console; real failures still print.
		npm install --prefix "$prefix" --save-exact --no-audit --no-fund --no-progress \
			--loglevel=error "maildev@$version" >&2 ||
			die "npm install maildev@$version failed (is the npm registry reachable?)"
	fi
	# maildev must not inherit the lock, or the next install would wait for it to exit.
	exec 9>&-
fi

# Everything maildev writes from here on (messages, attachments) is its owner's
# alone; mkdir -m does not change a directory that exists, hence the chmod (a
# mailbox made by an earlier version of this script).
umask 077
mkdir -p -m 0700 "$mail_dir"
chmod 0700 "$mail_dir"

# 127.0.0.1 for both listeners: maildev's defaults (:: and 0.0.0.0) would expose
# the mailbox, and the reset links in it, to the network. With --mail-directory
# the messages also survive a restart, like the rest of .local.
exec "$prefix/node_modules/.bin/maildev" \
	--ip 127.0.0.1 --smtp "$smtp_port" \
	--web-ip 127.0.0.1 --web "$web_port" \
	--mail-directory "$mail_dir" \
	"$@"
