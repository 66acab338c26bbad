#!/bin/sh
# Entrypoint of iaas-local/nginx:1 (built by scripts/services.sh from Debian packages).
# Like the official nginx image: when the command is nginx, run the executable *.sh files in
# /docker-entrypoint.d/ (sorted) first; then exec the command. Any other command runs as is.
# (The official image's envsubst-on-templates helper is not provided.)
set -eu

if [ "${1:-}" = nginx ] || [ "${1:-}" = nginx-debug ]; then
	for f in $(find /docker-entrypoint.d/ -follow -type f -name '*.sh' -print 2>/dev/null | sort -V); do
		if [ -x "$f" ]; then
			echo "$0: running $f"
			"$f"
		else
			echo "$0: ignoring $f, not executable"
		fi
	done
	echo "$0: configuration complete; ready for start up"
fi

exec "$@"
