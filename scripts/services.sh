#!/usr/bin/env bash
# Starts (or checks) every server roundtrip's broker-backed tests need, on loopback.
#
#   scripts/services.sh start    start whatever is down, install tansu if missing; idempotent
#   scripts/services.sh check    report each server; exit 1 if any is down
#
# Servers: NATS with JetStream (4222), Redis (6379), RabbitMQ (5672), Mosquitto (1883),
# and tansu, a Kafka-API broker (9092, in-memory storage). On Debian the first four come
# from the packages nats-server, redis-server, rabbitmq-server and mosquitto; tansu is
# built once with `cargo install tansu --locked --features dynostore` (about 13 minutes
# on 2 cores) and then reused.
set -euo pipefail

TANSU_LOG=${TANSU_LOG:-/tmp/roundtrip-tansu.log}

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# name port start-command...
SERVICES=(
  "nats 4222"
  "redis 6379"
  "rabbitmq 5672"
  "mosquitto 1883"
  "tansu 9092"
)

start_one() {
  case "$1" in
    nats)
      mkdir -p /var/lib/nats-server
      start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log ;;
    redis)
      mkdir -p /var/lib/redis /var/log/redis
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log ;;
    rabbitmq)
      rabbitmq-server -detached ;;
    mosquitto)
      mosquitto -d -c /etc/mosquitto/mosquitto.conf ;;
    tansu)
      if ! command -v tansu >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
        echo "installing tansu (once per machine; ~13 min on 2 cores)…"
        cargo install tansu --locked --features dynostore
      fi
      local bin
      bin=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
      nohup "$bin" broker --listener-url tcp://127.0.0.1:9092 \
        --advertised-listener-url tcp://127.0.0.1:9092 \
        --storage-engine memory://tansu/ >"$TANSU_LOG" 2>&1 &
      ;;
  esac
}

wait_up() {
  local name=$1 port=$2
  for _ in $(seq 1 120); do
    up "$port" && return 0
    sleep 0.5
  done
  echo "error: $name did not come up on 127.0.0.1:$port" >&2
  return 1
}

case "${1:-start}" in
  start)
    failed=0
    for entry in "${SERVICES[@]}"; do
      read -r name port <<<"$entry"
      if up "$port"; then
        echo "$name: up on 127.0.0.1:$port"
      else
        echo "$name: down, starting"
        start_one "$name" || true
        if wait_up "$name" "$port"; then echo "$name: started on 127.0.0.1:$port"; else failed=1; fi
      fi
    done
    exit $failed ;;
  check)
    failed=0
    for entry in "${SERVICES[@]}"; do
      read -r name port <<<"$entry"
      if up "$port"; then echo "$name: up"; else echo "$name: DOWN (127.0.0.1:$port)"; failed=1; fi
    done
    exit $failed ;;
  *)
    echo "usage: $0 start|check" >&2; exit 2 ;;
esac
