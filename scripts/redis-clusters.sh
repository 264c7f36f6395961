#!/usr/bin/env bash
# Start, stop and break the Redis clusters the `cluster` tests use, on loopback beside the
# machine's own Redis (6379 is never touched):
#   Sentinel set: primary 6401, replica 6402, sentinels 26401-26403, service "chmain"
#   Redis Cluster: 7001-7006, 3 primaries + 3 replicas
# Everything lives under $CLUSTERS_DIR (default /tmp/consumer-host-redis-clusters); no data is
# saved to disk. `start` is idempotent: what already answers is left alone.
#
#   scripts/redis-clusters.sh start|stop|status
#   scripts/redis-clusters.sh kill PORT...     # kill -9 the node on PORT
#   scripts/redis-clusters.sh revive PORT...   # start it again with its old config
#   scripts/redis-clusters.sh primary          # the Sentinel set's primary port now
set -euo pipefail

DIR=${CLUSTERS_DIR:-/tmp/consumer-host-redis-clusters}
SERVICE=chmain
SENTINEL_DATA=(6401 6402)
SENTINELS=(26401 26402 26403)
CLUSTER=(7001 7002 7003 7004 7005 7006)
NODE_TIMEOUT_MS=1500

answers() { redis-cli -p "$1" ping >/dev/null 2>&1; }

wait_for() {  # PORT: up to 10 s for the node to answer
    for _ in $(seq 100); do answers "$1" && return 0; sleep 0.1; done
    echo "redis on $1 did not start; see $DIR/$1/log" >&2
    return 1
}

write_conf() {  # PORT: a data node's config (cluster nodes get cluster options)
    local port=$1 dir=$DIR/$1
    mkdir -p "$dir"
    [ -f "$dir/redis.conf" ] && return 0
    {
        echo "port $port"
        echo "bind 127.0.0.1"
        echo "dir $dir"
        echo "save \"\""
        echo "appendonly no"
        echo "pidfile $dir/pid"
        echo "logfile $dir/log"
        echo "daemonize yes"
        if [[ " ${CLUSTER[*]} " == *" $port "* ]]; then
            echo "cluster-enabled yes"
            echo "cluster-config-file $dir/nodes.conf"
            echo "cluster-node-timeout $NODE_TIMEOUT_MS"
        fi
        # The replica of the Sentinel set; after a failover sentinels rewrite this line.
        if [ "$port" = 6402 ]; then echo "replicaof 127.0.0.1 6401"; fi
    } >"$dir/redis.conf"
}

write_sentinel_conf() {  # PORT
    local port=$1 dir=$DIR/$1
    mkdir -p "$dir"
    [ -f "$dir/sentinel.conf" ] && return 0
    cat >"$dir/sentinel.conf" <<CONF
port $port
bind 127.0.0.1
dir $dir
pidfile $dir/pid
logfile $dir/log
daemonize yes
sentinel monitor $SERVICE 127.0.0.1 6401 2
sentinel down-after-milliseconds $SERVICE 1000
sentinel failover-timeout $SERVICE 3000
sentinel parallel-syncs $SERVICE 1
CONF
}

start_node() {  # PORT
    local port=$1
    answers "$port" && return 0
    if [ -f "$DIR/$port/sentinel.conf" ]; then
        redis-server "$DIR/$port/sentinel.conf" --sentinel
    else
        write_conf "$port"
        redis-server "$DIR/$port/redis.conf"
    fi
}

start() {
    mkdir -p "$DIR"
    for port in "${SENTINEL_DATA[@]}" "${CLUSTER[@]}"; do write_conf "$port"; start_node "$port"; done
    for port in "${SENTINELS[@]}"; do write_sentinel_conf "$port"; start_node "$port"; done
    for port in "${SENTINEL_DATA[@]}" "${SENTINELS[@]}" "${CLUSTER[@]}"; do wait_for "$port"; done
    if ! redis-cli -p 7001 cluster info | grep -q "cluster_state:ok"; then
        if [ "$(redis-cli -p 7001 cluster info | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p')" = 1 ]; then
            redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER[@]}") \
                --cluster-replicas 1 --cluster-yes >"$DIR/cluster-create.log"
        fi
        for _ in $(seq 150); do
            redis-cli -p 7001 cluster info | grep -q "cluster_state:ok" && break
            sleep 0.2
        done
    fi
    # Every replica in sync before a test kills anything: an unsynced one cannot be promoted.
    for _ in $(seq 150); do
        [ "$(redis-cli -p 7001 cluster nodes | grep -c ' slave ')" = 3 ] && break
        sleep 0.2
    done
    status
}

stop() {
    # By port too: a node whose pidfile is gone (a crashed start) must not outlive the set.
    for port in "${SENTINEL_DATA[@]}" "${SENTINELS[@]}" "${CLUSTER[@]}"; do
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
    for pidfile in "$DIR"/*/pid; do
        [ -f "$pidfile" ] || continue
        kill -9 "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    done
    rm -rf "$DIR"
}

status() {
    echo "sentinel primary: $(primary)"
    echo "cluster: $(redis-cli -p 7001 cluster info 2>/dev/null | grep cluster_state | tr -d '\r')"
}

primary() {
    redis-cli -p "${SENTINELS[0]}" sentinel get-master-addr-by-name "$SERVICE" | sed -n 2p
}

kill_nodes() {
    for port in "$@"; do
        local pidfile=$DIR/$port/pid
        if [ -f "$pidfile" ]; then kill -9 "$(cat "$pidfile")" 2>/dev/null || true; fi
        rm -f "$pidfile"
    done
}

revive() {
    for port in "$@"; do start_node "$port"; done
    for port in "$@"; do wait_for "$port"; done
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
primary) primary ;;
kill) shift; kill_nodes "$@" ;;
revive) shift; revive "$@" ;;
*) echo "usage: $0 start|stop|status|primary|kill PORT...|revive PORT..." >&2; exit 2 ;;
esac
