#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on loopback for the cluster tests, beside the machine's own broker.
#
#   scripts/rabbitmq-cluster.sh start|stop|status|url|kill N|revive N|ctl N ARGS...
#
# Nodes chcl1@localhost..chcl3@localhost listen for AMQP on 127.0.0.1:5701..5703 (distribution on
# 25701..25703). Everything they own lives under $CLUSTER_DIR: data, logs, PID files, an env file
# (so /etc/rabbitmq's, which names the machine's rabbit@localhost, is never read), an empty plugin
# list and the cluster's own Erlang cookie (in $CLUSTER_DIR/home, the HOME of both the servers and
# rabbitmqctl). The machine's own rabbit@ node on 5672 is never touched. `start` is idempotent.
set -euo pipefail

CLUSTER_DIR=${CONSUMER_HOST_RABBITMQ_CLUSTER_DIR:-/tmp/consumer-host-rabbitmq-cluster}
RABBIT_BIN=${RABBIT_BIN:-/usr/lib/rabbitmq/bin}
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
NODES=(1 2 3)
AMQP_BASE=5700
DIST_BASE=25700

node_name() { echo "chcl$1@localhost"; }

node_env() {
  # The environment of node $1, for rabbitmq-server and rabbitmqctl alike.
  local n=$1
  echo HOME="$CLUSTER_DIR/home" \
    RABBITMQ_CONF_ENV_FILE="$CLUSTER_DIR/rabbitmq-env.conf" \
    RABBITMQ_CONFIG_FILE="$CLUSTER_DIR/rabbitmq" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$CLUSTER_DIR/advanced.config" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$CLUSTER_DIR/enabled_plugins" \
    RABBITMQ_NODENAME="$(node_name "$n")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT=$((AMQP_BASE + n)) \
    RABBITMQ_DIST_PORT=$((DIST_BASE + n)) \
    RABBITMQ_MNESIA_BASE="$CLUSTER_DIR/mnesia" \
    RABBITMQ_LOG_BASE="$CLUSTER_DIR/log" \
    RABBITMQ_PID_FILE="$CLUSTER_DIR/chcl$n.pid" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    ERL_CRASH_DUMP="$CLUSTER_DIR/log/erl_crash.dump"
}

in_env() {
  local n=$1
  shift
  # shellcheck disable=SC2046 # node_env's words are NAME=VALUE pairs without spaces
  env $(node_env "$n") "$@"
}

ctl() {
  local n=$1
  shift
  in_env "$n" "$RABBIT_BIN/rabbitmqctl" -n "$(node_name "$n")" "$@"
}

prepare() {
  mkdir -p "$CLUSTER_DIR/home" "$CLUSTER_DIR/mnesia" "$CLUSTER_DIR/log"
  if [ ! -f "$CLUSTER_DIR/home/.erlang.cookie" ]; then
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$CLUSTER_DIR/home/.erlang.cookie"
    chmod 400 "$CLUSTER_DIR/home/.erlang.cookie"
  fi
  echo '[].' >"$CLUSTER_DIR/enabled_plugins"
  : >"$CLUSTER_DIR/rabbitmq-env.conf"
  # RabbitMQ's defaults otherwise: a node killed with kill -9 closes its distribution links, so
  # its peers notice at once. (pause_minority with a short net_ticktime paused healthy nodes when
  # the shared 2-core machine was busy, and a revived node then waited for them for minutes.)
  echo 'loopback_users = none' >"$CLUSTER_DIR/rabbitmq.conf"
  echo '[].' >"$CLUSTER_DIR/advanced.config"
}

node_pid() {
  # The OS pid of node $1's server: a beam started with this cluster's HOME whose environment
  # names the node (rabbitmqctl's own beam runs "escript", not "rabbit boot").
  local pid
  for pid in $(pgrep -f -- "-home $CLUSTER_DIR/home -- .*-s rabbit boot" || true); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "RABBITMQ_NODENAME=$(node_name "$1")"; then
      echo "$pid"
      return 0
    fi
  done
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$((AMQP_BASE + $1))") 2>/dev/null; }

is_up() { [ -n "$(node_pid "$1")" ] && listening "$1"; }

boot() {
  local n=$1
  [ -n "$(node_pid "$n")" ] && return 0
  # Detached, with no descriptor of the caller's: a pipe it held would never reach EOF.
  in_env "$n" "$RABBIT_BIN/rabbitmq-server" -detached </dev/null >>"$CLUSTER_DIR/log/boot-$n.log" 2>&1 || true
}

await() {
  # Up once its AMQP listener accepts: RabbitMQ opens it last, when the node has booted.
  local n=$1 i
  for i in $(seq 1 240); do
    listening "$n" && return 0
    sleep 0.5
  done
  echo "rabbitmq-cluster: $(node_name "$n") did not come up; see $CLUSTER_DIR/log" >&2
  return 1
}

joined() {
  # Whether node $1 already counts node 1 among its cluster's disc nodes.
  timeout 60 "$SELF" ctl "$1" -q cluster_status --formatter json 2>/dev/null |
    grep -q "$(node_name 1)"
}

start() {
  prepare
  for n in "${NODES[@]}"; do boot "$n"; done
  for n in "${NODES[@]}"; do await "$n"; done
  for n in 2 3; do
    if ! joined "$n"; then
      {
        timeout 120 "$SELF" ctl "$n" -q stop_app
        timeout 120 "$SELF" ctl "$n" -q reset
        timeout 120 "$SELF" ctl "$n" -q join_cluster "$(node_name 1)"
        timeout 120 "$SELF" ctl "$n" -q start_app
      } >>"$CLUSTER_DIR/log/join-$n.log" 2>&1
    fi
  done
  for n in "${NODES[@]}"; do await "$n"; done
  echo "rabbitmq cluster up: $(url)"
}

kill_node() {
  local pid
  pid=$(node_pid "$1")
  if [ -n "$pid" ]; then
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  fi
}

revive() {
  boot "$1"
  await "$1"
}

stop() {
  for n in "${NODES[@]}"; do
    if [ -n "$(node_pid "$n")" ]; then
      timeout 30 "$SELF" ctl "$n" -q stop >/dev/null 2>&1 || true
      kill_node "$n" # whatever a polite stop left running
    fi
  done
}

status() {
  for n in "${NODES[@]}"; do
    if is_up "$n"; then echo "$(node_name "$n") up"; else echo "$(node_name "$n") down"; fi
  done
}

url() {
  local parts=()
  for n in "${NODES[@]}"; do parts+=("amqp://guest:guest@127.0.0.1:$((AMQP_BASE + n))//"); done
  (
    IFS=';'
    echo "${parts[*]}"
  )
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) url ;;
  kill) kill_node "$2" ;;
  revive) revive "$2" ;;
  ctl)
    n=$2
    shift 2
    ctl "$n" "$@"
    ;;
  *)
    echo "usage: $0 start|stop|status|url|kill N|revive N|ctl N ARGS..." >&2
    exit 2
    ;;
esac
