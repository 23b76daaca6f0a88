#!/usr/bin/env bash
# Server instructions per rate-limit check, counted by callgrind inside redis-server: a figure
# that does not move with the machine's noise (throughput on this 2-core VM does, by +-20%).
#
# Compares, on one redis-server run under `valgrind --tool=callgrind`, EVALSHA of:
#   trivial  `return 1` (the reference of `fieldlab bench ratelimit`)
#   floor    PTTL + SET PX + one integer back: the least a correct check can do (read clock
#            and state at once, write the state)
#   floor-string  TIME + GET + PSETEX: the same for a state kept in a string
#   generic  crates/ratelimit/src/check.lua with its full argument list
#   single   crates/ratelimit/src/single.lua with the constants line redis.rs puts before it
#            for the benchmark's limit: token bucket, 1000 per 1000 ms, burst 1000 (a whole ms
#            per token: the state is the key's expiry)
#   single-string  the same for 999 per 1000 ms (state in a string, clock by TIME)
# each over N checks (default 5000) on 10000 random keys, 10 pipelined per connection.
#
# Needs valgrind, redis-server, redis-cli, redis-benchmark (Debian: valgrind redis-server
# redis-tools). Usage: bench/redis-script-cost.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
  redis-server --port "$port" --save '' --appendonly no --dir "$dir" >"$dir/vg.log" 2>&1 &
vg=$!
trap 'kill $vg 2>/dev/null; wait $vg 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.2; done

printf '%s\n' "local alg, lim, per, burst, a, b, ttl = 3, 1000, 1000, 1000, 1, 1000, '0'" \
  >"$dir/single.lua"
cat crates/ratelimit/src/single.lua >>"$dir/single.lua"
printf '%s\n' "local alg, lim, per, burst, a, b, ttl = 1, 999, 1000, 1000, 1000000, 1002, '2002'" \
  >"$dir/single-string.lua"
cat crates/ratelimit/src/single.lua >>"$dir/single-string.lua"
key='fieldlab:rl:{__rand_int__}:bench:0:token_bucket:v3'

cost() { # name script-file args...
  local name=$1 file=$2; shift 2
  local sha ir
  sha=$(redis-cli -p "$port" SCRIPT LOAD "$(cat "$file")")
  redis-cli -p "$port" FLUSHALL >/dev/null
  redis-benchmark -p "$port" -c 1 -P 10 -n 1000 -r 10000 EVALSHA "$sha" "$@" >/dev/null
  callgrind_control -z "$vg" >/dev/null 2>&1
  redis-benchmark -p "$port" -c 1 -P 10 -n "$N" -r 10000 EVALSHA "$sha" "$@" >/dev/null
  ir=$(callgrind_control -e "$vg" 2>/dev/null | awk '/Th 1 /{gsub(",","",$3); print $3}')
  printf '%-14s %8d instructions per check\n' "$name" $((ir / N))
}
echo 'return 1' >"$dir/trivial.lua"
echo "redis.call('PTTL', KEYS[1]) redis.call('SET', KEYS[1], '', 'PX', 1000) return 1" >"$dir/floor.lua"
echo "redis.call('TIME') redis.call('GET', KEYS[1]) redis.call('PSETEX', KEYS[1], '2000', '1000:1700000000000') return 1" >"$dir/floor-string.lua"
cost trivial "$dir/trivial.lua" 0
cost floor "$dir/floor.lua" 1 "$key"
cost floor-string "$dir/floor-string.lua" 1 "$key"
# Code 11: token bucket (1) whose state is the key's expiry (+ 10).
cost generic crates/ratelimit/src/check.lua 1 "$key" '' 1 0 11 1000 1000 1000 0
# As fieldlab sends a check of one unit on the server clock: the key alone.
cost single "$dir/single.lua" 1 "$key"
cost single-string "$dir/single-string.lua" 1 "${key%:v3}:v2"
