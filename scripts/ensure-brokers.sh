#!/usr/bin/env bash
# Make sure RabbitMQ and Redis run on loopback, installing them from Debian's packages if needed.
# Used by .ci/run; on a developer machine it is harmless when both already run.
set -euo pipefail

need_install=()
command -v redis-server >/dev/null 2>&1 || need_install+=(redis-server)
command -v rabbitmq-server >/dev/null 2>&1 || need_install+=(rabbitmq-server)
if [ ${#need_install[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-brokers: ${need_install[*]} missing and not root; install them first" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_install[@]}" >/dev/null
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi

if ! rabbitmqctl -q status >/dev/null 2>&1; then
  rabbitmq-server -detached || true
fi
timeout 120 rabbitmqctl -q await_startup >/dev/null

for _ in $(seq 1 50); do
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "ensure-brokers: redis did not answer on 127.0.0.1:6379" >&2
exit 1
