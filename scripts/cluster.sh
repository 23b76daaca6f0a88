#!/usr/bin/env bash
# A local cluster of three fieldlab replicas on their real engines, all state under one dir.
#
#   scripts/cluster.sh up DIR     start nats-server (JetStream + MQTT listener, the subject
#                                 mapping that partitions device streams by device id),
#                                 redis-server (rate-limit counters and rules), and replicas
#                                 1..3 (`fieldlab up`, loopback, auth off like `fieldlab up`);
#                                 prints `mqtt URL` (where devices publish) and `http URL` per
#                                 replica, writes DIR/replica-N.pid, returns once all are ready
#   scripts/cluster.sh down DIR   stop everything `up` started in DIR
#
# The binary: $FIELDLAB_BIN, else target/release/fieldlab or target/debug/fieldlab (whichever is
# newer), else it is built (cargo build --release -p fieldlab). Engines missing here are installed
# with apt-get (nats-server, redis-server). REPLICAS=N changes the count (default 3);
# PARTITIONS=N the partitions (default 12).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

usage() { echo "usage: scripts/cluster.sh up|down DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
replicas=${REPLICAS:-3}
partitions=${PARTITIONS:-12}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

stop_pidfile() {
  local f=$1
  [ -f "$f" ] || return 0
  local pid
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

down() {
  for n in $(seq 1 "$replicas"); do stop_pidfile "$dir/replica-$n.pid"; done
  # Replicas beyond REPLICAS from an earlier `up`, then the engines.
  for f in "$dir"/replica-*.pid; do [ -e "$f" ] && stop_pidfile "$f"; done
  stop_pidfile "$dir/redis.pid"
  stop_pidfile "$dir/nats.pid"
}

binary() {
  if [ -n "${FIELDLAB_BIN:-}" ]; then echo "$FIELDLAB_BIN"; return; fi
  local r="$root/target/release/fieldlab" d="$root/target/debug/fieldlab"
  if [ -x "$r" ] && { [ ! -x "$d" ] || [ "$r" -nt "$d" ]; }; then echo "$r"; return; fi
  if [ -x "$d" ]; then echo "$d"; return; fi
  cargo build --release -p fieldlab >&2
  echo "$r"
}

install_engines() {
  local need=()
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  if [ ${#need[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "cluster.sh: installing ${need[*]} (apt-get)" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

wait_port() { # name port
  for _ in $(seq 1 200); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$2),0.2)" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "cluster.sh: $1 did not listen on port $2 (see $dir/$1.log)" >&2
  return 1
}

up() {
  install_engines
  local bin nats_bin
  bin=$(binary)
  nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  down # a leftover cluster in DIR
  local nats_port mqtt_port redis_port
  nats_port=$(free_port); mqtt_port=$(free_port); redis_port=$(free_port)

  mkdir -p "$dir/nats"
  {
    echo "listen: 127.0.0.1:$nats_port"
    echo "server_name: fieldlab_local"
    echo "jetstream { store_dir: \"$dir/nats/jetstream\" }"
    echo "mqtt { listen: 127.0.0.1:$mqtt_port }"
    "$bin" config nats-mapping --partitions "$partitions"
  } > "$dir/nats/nats.conf"
  "$nats_bin" -c "$dir/nats/nats.conf" > "$dir/nats.log" 2>&1 &
  echo $! > "$dir/nats.pid"

  mkdir -p "$dir/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir/redis" --appendonly yes \
    --appendfsync everysec --save "" > "$dir/redis.log" 2>&1 &
  echo $! > "$dir/redis.pid"
  wait_port nats "$nats_port"
  wait_port nats "$mqtt_port"
  wait_port redis "$redis_port"

  local ports=()
  for n in $(seq 1 "$replicas"); do
    local http_port
    http_port=$(free_port)
    ports+=("$http_port")
    mkdir -p "$dir/replica-$n"
    cat > "$dir/replica-$n/fieldlab.yaml" <<YAML
# Replica $n of the local cluster (scripts/cluster.sh).
server:
  host: 127.0.0.1
  port: $http_port
mqtt:
  broker_url: mqtt://127.0.0.1:$mqtt_port
storage:
  data_dir: $dir/replica-$n/data
ratelimit:
  redis_url: redis://127.0.0.1:$redis_port/
cluster:
  nats_url: nats://127.0.0.1:$nats_port
  replica_id: replica-$n
  partitions: $partitions
devices:
  fleet: []
opcua:
  enabled: false
YAML
    FIELDLAB_CONFIG="$dir/replica-$n/fieldlab.yaml" "$bin" up > "$dir/replica-$n.log" 2>&1 &
    echo $! > "$dir/replica-$n.pid"
  done

  # Ready = every replica's /ready answers 200 (store open, NATS reached, its partitions taken
  # over and read to the end of the log).
  for n in $(seq 1 "$replicas"); do
    local port=${ports[$((n - 1))]} ok=""
    for _ in $(seq 1 600); do
      if ! kill -0 "$(cat "$dir/replica-$n.pid")" 2>/dev/null; then
        echo "cluster.sh: replica $n exited; its log ($dir/replica-$n.log) ends:" >&2
        tail -n 20 "$dir/replica-$n.log" >&2
        down
        exit 1
      fi
      if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/ready', timeout=1)" 2>/dev/null; then
        ok=1; break
      fi
      sleep 0.1
    done
    if [ -z "$ok" ]; then
      echo "cluster.sh: replica $n not ready after 60 s (see $dir/replica-$n.log)" >&2
      down
      exit 1
    fi
  done
  echo "mqtt mqtt://127.0.0.1:$mqtt_port"
  for n in $(seq 1 "$replicas"); do
    echo "http http://127.0.0.1:${ports[$((n - 1))]}"
  done
}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) usage ;;
esac
