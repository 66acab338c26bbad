#!/usr/bin/env bash
# Refresh over HTTP beside what Redis alone allows for the round trip a refresh needs, in one
# run on one private redis-server:
#
#   1. the platform (release, embedded defaults, sessions on the private server) under
#      `iaas-load http --mix refresh=1`: refreshes per second, and the Redis calls each one made
#      (`INFO commandstats`);
#   2. redis-benchmark sending the platform's own rotate script (`EVALSHA`, taken from the
#      server's command stream while the platform refreshed) on sessions written beforehand,
#      at the same number of connections: what Redis alone allows for that round trip;
#   3. redis-benchmark `PING` at the same connections: the bare round trip.
#
#   scripts/refresh-vs-redis.sh [--connections N] [--users N] [--duration SECS]
#                               [--requests N] [--sessions N]
#
# Defaults: 32 connections, 64 users, 20 s of HTTP load, 100,000 scripted rotations over
# 2,000,000 written sessions. redis-benchmark picks sessions at random (`__rand_int__`), so a
# few of its calls present a session it already rotated and take the reuse path instead (the
# report counts the real rotations). The load client, redis-benchmark, the platform and Redis
# share the machine's cores, as in any run of scripts/load.sh.
set -euo pipefail

cd "$(dirname "$0")/.."
connections=32
users=64
duration=20
requests=100000
sessions=2000000
while (($#)); do
    case "$1" in
        --connections) connections="$2"; shift 2 ;;
        --users) users="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --requests) requests="$2"; shift 2 ;;
        --sessions) sessions="$2"; shift 2 ;;
        *) echo "unknown argument: $1 (see the comment at the top of $0)" >&2; exit 2 ;;
    esac
done
for tool in redis-server redis-cli redis-benchmark python3; do
    command -v "${tool}" >/dev/null || { echo "${tool} is needed (Debian: redis-server, redis-tools, python3)" >&2; exit 1; }
done

work="$(mktemp -d -t iaas-refresh-redis-XXXXXX)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --bind 127.0.0.1 --port "${port}" --save '' --appendonly no --dir "${work}" \
    >"${work}/redis.log" 2>&1 &
redis=$!
cleanup() {
    kill "${redis}" 2>/dev/null || true
    wait "${redis}" 2>/dev/null || true
    rm -rf "${work}"
}
trap cleanup EXIT
cli() { redis-cli -p "${port}" "$@"; }
for _ in $(seq 1 50); do
    cli PING >/dev/null 2>&1 && break
    sleep 0.1
done
cli PING >/dev/null

# Calls per command since the last CONFIG RESETSTAT, as `command calls usec` lines.
commandstats() {
    cli INFO commandstats | python3 -c '
import sys
for line in sys.stdin:
    if line.startswith("cmdstat_"):
        name, fields = line.strip()[len("cmdstat_"):].split(":", 1)
        f = dict(kv.split("=") for kv in fields.split(","))
        print(name, f["calls"], f["usec"])'
}
cpu_seconds() { cli INFO cpu | python3 -c '
import sys
f = dict(l.strip().split(":", 1) for l in sys.stdin if ":" in l)
print(float(f["used_cpu_sys"]) + float(f["used_cpu_user"]))'; }

export IAAS_REDIS_URL="redis://127.0.0.1:${port}"

# Built before MONITOR starts, so its 60 s are the short run's, not the build's.
cargo build --release -p iaas-platform -p iaas-benches --bin iaas-platform --bin iaas-load >&2
echo "== taking the rotate call from the server's command stream (a short refresh run)"
timeout 60 redis-cli -p "${port}" MONITOR >"${work}/monitor.txt" 2>/dev/null &
monitor=$!
scripts/load.sh http --mix refresh=1 --users 2 --connections 1 --duration 2 >"${work}/short.txt"
kill "${monitor}" 2>/dev/null || true
wait "${monitor}" 2>/dev/null || true
# The rotate script: EVALSHA sha 0 prefix presented successor now_ms grace_ms idle_ms.
read -r sha grace idle < <(python3 -c '
import shlex, sys
for line in open(sys.argv[1], errors="replace"):
    if "] \"EVALSHA\"" not in line:
        continue
    args = shlex.split(line.split("] ", 1)[1])
    if len(args) == 9 and args[2] == "0":
        print(args[1], args[7], args[8])
        break
else:
    sys.exit("no rotate call (EVALSHA with 6 arguments) seen while the platform refreshed")
' "${work}/monitor.txt")
echo "rotate script ${sha}, grace ${grace} ms, idle ${idle} ms"

echo "== 1. refresh over HTTP: ${users} users, ${connections} connections, ${duration} s"
cli CONFIG RESETSTAT >/dev/null
cpu_before="$(cpu_seconds)"
scripts/load.sh http --mix refresh=1 --users "${users}" --connections "${connections}" \
    --duration "${duration}" | tee "${work}/http.txt"
cpu_after="$(cpu_seconds)"
commandstats >"${work}/http-stats.txt"

echo "== 2. the rotate script alone: ${sessions} sessions written, ${requests} calls"
now_ms="$(python3 -c 'import time; print(int(time.time() * 1000))')"
far_ms=$((now_ms + 10 * 24 * 3600 * 1000))
prefix="bench:"
# Sessions as the platform writes them, one user and one family each, named the way
# redis-benchmark fills in __rand_int__ (12 digits).
chunk=100000
for ((from = 0; from < sessions; from += chunk)); do
    to=$((from + chunk > sessions ? sessions : from + chunk))
    cli EVAL "
local p, far = ARGV[1], ARGV[4]
for i = tonumber(ARGV[2]), tonumber(ARGV[3]) - 1 do
  local h = string.format('%012d', i)
  redis.call('HSET', p .. 'refresh:' .. h, 'user', 'u' .. i, 'family', 'f' .. i,
    'created_ms', ARGV[5], 'family_created_ms', ARGV[5], 'expires_ms', far, 'client', 'bench',
    'idle_until_ms', far)
  redis.call('SADD', p .. 'family:f' .. i, h)
end
return 1" 0 "${prefix}" "${from}" "${to}" "${far_ms}" "${now_ms}" >/dev/null
done
echo "written: $(cli DBSIZE) keys, $(cli INFO memory | grep '^used_memory_human' | cut -d: -f2 | tr -d '\r')"
cli CONFIG RESETSTAT >/dev/null
cpu_before_rb="$(cpu_seconds)"
redis-benchmark -p "${port}" -c "${connections}" -n "${requests}" -r "${sessions}" -q \
    EVALSHA "${sha}" 0 "${prefix}" __rand_int__ n__rand_int__ "${now_ms}" "${grace}" "${idle}" \
    | tee "${work}/rotate.txt"
cpu_after_rb="$(cpu_seconds)"
commandstats >"${work}/rotate-stats.txt"

echo "== 3. the bare round trip"
redis-benchmark -p "${port}" -c "${connections}" -n "$((requests * 2))" -q -t ping_mbulk \
    | tee "${work}/ping.txt"

python3 - "${work}" "${cpu_before}" "${cpu_after}" "${cpu_before_rb}" "${cpu_after_rb}" <<'EOF'
import re, sys
work, cpu0, cpu1, cpu2, cpu3 = sys.argv[1], *map(float, sys.argv[2:])

def stats(name):
    out = {}
    for line in open(f"{work}/{name}"):
        cmd, calls, usec = line.split()
        out[cmd] = (int(calls), int(usec))
    return out

def rate(name):
    text = open(f"{work}/{name}").read().replace("\r", "\n")
    found = re.findall(r"([0-9.]+) requests per second", text)
    if not found:
        sys.exit(f"no 'requests per second' in {name}: {text[-300:]}")
    return float(found[-1])

refresh = None
for line in open(f"{work}/http.txt"):
    fields = line.split()
    if fields and fields[0] == "refresh":
        refresh = (int(fields[1]), int(fields[2]), float(fields[3]))
if refresh is None:
    sys.exit("no refresh row in the load tool's report")
cpu = re.search(r"CPU per request: platform ([0-9]+) µs .* this tool ([0-9]+) µs",
                open(f"{work}/http.txt").read())
count, errors, http_rate = refresh
if errors:
    sys.exit(f"{errors} refreshes failed over HTTP; not comparing")
http = stats("http-stats.txt")
calls = sum(c for c, _ in http.values())
evalsha = http.get("evalsha", (0, 0))[0]
rotate = stats("rotate-stats.txt")
rotations = rotate.get("hset", (0, 0))[0] // 2
script_calls, script_usec = rotate.get("evalsha", (0, 0))
rotate_rate, ping_rate = rate("rotate.txt"), rate("ping.txt")

print()
# Redis counts the commands a script runs as calls too: EVALSHA is the round trip.
print(f"refresh over HTTP: {count} in the run, {http_rate:,.0f}/s; round trips (EVALSHA) per "
      f"refresh: {evalsha / count:.2f}, commands counted by the server per refresh (the "
      f"script's own included): {calls / count:.2f}")
print(f"CPU per refresh: Redis {(cpu1 - cpu0) / count * 1e6:.0f} µs"
      + (f", platform {cpu.group(1)} µs, load tool {cpu.group(2)} µs" if cpu else
         " (the platform's and the load tool's not reported)"))
print(f"rotate script alone (redis-benchmark, same connections): {rotate_rate:,.0f} calls/s, "
      f"{rotations} of {script_calls} calls rotated ({rotations / max(script_calls, 1):.1%}); "
      f"server {script_usec / max(script_calls, 1):.1f} µs per call, Redis CPU per call "
      f"{(cpu3 - cpu2) / max(script_calls, 1) * 1e6:.0f} µs")
print(f"bare round trip (PING): {ping_rate:,.0f}/s")
print()
print("| measure | per second | refresh over HTTP as a fraction |")
print("|---|---|---|")
print(f"| refresh over HTTP | {http_rate:,.0f} | |")
print(f"| the rotate script alone (one round trip, what a refresh needs) | {rotate_rate:,.0f} | "
      f"**{http_rate / rotate_rate:.2f}x** |")
print(f"| bare round trip (PING) | {ping_rate:,.0f} | {http_rate / ping_rate:.2f}x |")
EOF
