#!/bin/sh
# Entrypoint of iaas-local/redis:7 (built by scripts/services.sh from Debian packages).
# Like the official redis image:
#  - `IMAGE --opt value` or `IMAGE /path/redis.conf` means `redis-server ...`;
#  - redis-server runs as the redis user (dropped from root with setpriv), umask 0077;
#  - protected mode is off unless the arguments set it or a config file is given (the official
#    image compiles that default in; Debian's binary needs `--protected-mode no`). Without a config
#    file redis 7 binds to all interfaces (`* -::*`), so the published port is reachable.
# Any other command runs as is.
set -eu

first="${1:-}"
if [ "${first#-}" != "$first" ] || [ "${first%.conf}" != "$first" ]; then
	set -- redis-server "$@"
fi

if [ "${1:-}" = redis-server ]; then
	case "${2:-}" in
	*.conf) ;;
	*)
		case " $* " in
		*" --protected-mode "*) ;;
		*) set -- "$@" --protected-mode no ;;
		esac
		;;
	esac
	if [ "$(id -u)" = 0 ]; then
		find . \! -user redis -exec chown redis '{}' +
		exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
	fi
	if [ "$(umask)" = 0022 ]; then
		umask 0077
	fi
fi

exec "$@"
