#!/usr/bin/env bash
# Starts (or checks) every server roundtrip's broker-backed tests need, on loopback.
#
#   scripts/services.sh start    start whatever is down, install tansu and moto if missing; idempotent
#   scripts/services.sh check    report each server; exit 1 if any is down
#   scripts/services.sh aws-env  print the environment for the AWS emulator:
#                                eval "$(scripts/services.sh aws-env)"
#
# Servers: PostgreSQL (5432, for the Postgres store), NATS with JetStream (4222), Redis (6379), RabbitMQ (5672), Mosquitto (1883, and
# 1884 with no per-client queue limit), and tansu, a Kafka-API broker (9092, in-memory storage). For the TLS tests, a second
# NATS (4223), Redis (6390) and Mosquitto (8883) that speak only mutual TLS, with a throwaway CA and
# certificates generated once into $ROUNDTRIP_TLS_DIR (default ~/.cache/roundtrip-tls). On Debian the first four come
# from the packages nats-server, redis-server, rabbitmq-server and mosquitto; tansu is
# built once with `cargo install tansu --locked --features dynostore` (about 13 minutes
# on 2 cores) and then reused. The AWS APIs (S3, SQS, SNS, EventBridge, DynamoDB) come from
# moto's emulator (PyPI `moto[server]`, installed once with pip) on 127.0.0.1:5055; it
# accepts any credentials.
set -euo pipefail

TANSU_LOG=${TANSU_LOG:-/tmp/roundtrip-tansu.log}
MOTO_LOG=${MOTO_LOG:-/tmp/roundtrip-moto.log}
MOTO_VERSION=5.2.1
TLS_DIR=${ROUNDTRIP_TLS_DIR:-$HOME/.cache/roundtrip-tls}

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# name port start-command...
SERVICES=(
  "postgres 5432"
  "nats 4222"
  "redis 6379"
  "rabbitmq 5672"
  "mosquitto 1883"
  "mosquitto-roomy 1884"
  "tansu 9092"
  "moto 5055"
  "nats-tls 4223"
  "redis-tls 6390"
  "mosquitto-tls 8883"
)

# A CA, a server certificate for 127.0.0.1/localhost and a client certificate, once.
ensure_certs() {
  [ -s "$TLS_DIR/client.key" ] && return 0
  mkdir -p "$TLS_DIR"
  (
    cd "$TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=roundtrip test CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    for who in server client; do
      openssl req -newkey rsa:2048 -nodes -subj "/CN=roundtrip-$who" \
        -keyout "$who.key" -out "$who.csr" 2>/dev/null
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=%s\n' \
        "$([ "$who" = server ] && echo serverAuth || echo clientAuth)" > "$who.ext"
      openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days 3650 -extfile "$who.ext" -out "$who.pem" 2>/dev/null
    done
    rm -f ./*.csr ./*.ext ca.srl
  )
  echo "generated a test CA and certificates in $TLS_DIR"
}

start_one() {
  case "$1" in
    postgres)
      # Debian's cluster (trust auth on loopback, a `test` database: the Postgres store's
      # tests use it, each in a schema of its own).
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start ;;
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
    mosquitto-roomy)
      # A Mosquitto configured as docs/transports/mqtt.md advises for at-least-once
      # listeners: no limit on the messages queued per client (the default, 1,000, makes
      # it drop messages for a subscriber that acks only after a durable commit).
      mkdir -p "$TLS_DIR"
      cat > "$TLS_DIR/mosquitto-roomy.conf" <<CONF
listener 1884 127.0.0.1
allow_anonymous true
max_queued_messages 0
persistence false
user $(id -un)
CONF
      mosquitto -d -c "$TLS_DIR/mosquitto-roomy.conf" ;;
    moto)
      if ! python3 -c "import moto.server" >/dev/null 2>&1; then
        echo "installing moto[server]==$MOTO_VERSION (once per machine)…"
        python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
      fi
      nohup python3 -m moto.server -H 127.0.0.1 -p 5055 >"$MOTO_LOG" 2>&1 &
      ;;
    nats-tls)
      ensure_certs
      nohup /usr/sbin/nats-server -a 127.0.0.1 -p 4223 --tlsverify \
        --tlscert "$TLS_DIR/server.pem" --tlskey "$TLS_DIR/server.key" \
        --tlscacert "$TLS_DIR/ca.pem" >/tmp/roundtrip-nats-tls.log 2>&1 & ;;
    redis-tls)
      ensure_certs
      mkdir -p /var/log/redis
      redis-server --daemonize yes --bind 127.0.0.1 --port 0 --tls-port 6390 \
        --tls-cert-file "$TLS_DIR/server.pem" --tls-key-file "$TLS_DIR/server.key" \
        --tls-ca-cert-file "$TLS_DIR/ca.pem" --tls-auth-clients yes --save "" \
        --appendonly no --dir /tmp --logfile /var/log/redis/roundtrip-tls.log ;;
    mosquitto-tls)
      ensure_certs
      cat > "$TLS_DIR/mosquitto.conf" <<CONF
listener 8883 127.0.0.1
allow_anonymous true
cafile $TLS_DIR/ca.pem
certfile $TLS_DIR/server.pem
keyfile $TLS_DIR/server.key
require_certificate true
persistence false
user $(id -un)
CONF
      mosquitto -d -c "$TLS_DIR/mosquitto.conf" ;;
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
    # Certificates regenerated under running TLS servers would not match them.
    if [ ! -s "$TLS_DIR/client.key" ]; then
      pkill -f "nats-server -a 127.0.0.1 -p 4223" 2>/dev/null || true
      pkill -f "redis-server 127.0.0.1:6390" 2>/dev/null || true
      pkill -f "mosquitto -d -c $TLS_DIR/mosquitto.conf" 2>/dev/null || true
      ensure_certs
    fi
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
  aws-env)
    # moto accepts any credentials; the AWS SDKs and roundtrip read these.
    echo "export AWS_ACCESS_KEY_ID=roundtrip AWS_SECRET_ACCESS_KEY=roundtrip"
    echo "export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ENDPOINT_URL=http://127.0.0.1:5055" ;;
  *)
    echo "usage: $0 start|check|aws-env" >&2; exit 2 ;;
esac
