#!/usr/bin/env bash
# Starts the services the test suite talks to, on loopback, in .tmp/:
#   - PostgreSQL (Debian package postgresql) with wal_level=logical;
#   - Apache Kafka 4.x, one KRaft node, from Maven Central jars (Java 17).
#   - Apache Cassandra 5 (one node, Maven Central jars): CQL for the
#     ScyllaDB store's parts that need no Scylla CDC;
#   - in front of it, the ScyllaDB CDC emulation (internal/scyllaemu): a
#     trigger that writes Scylla's CDC log and a CQL proxy for Scylla's
#     system tables, so the ScyllaDB suite runs through scylla-cdc-go.
# Source it, call start_services, and it exports OUTBOX_TEST_PG_DSN,
# OUTBOX_TEST_PG_CTL (a wrapper: stop-immediate | start),
# OUTBOX_TEST_KAFKA_BROKERS, OUTBOX_TEST_KAFKA_CTL (kill | start),
# OUTBOX_TEST_CASSANDRA_HOSTS, OUTBOX_TEST_CASSANDRA_CTL (kill | start)
# and OUTBOX_TEST_SCYLLA_HOSTS (the emulation's proxy).
# stop_services (also run on EXIT) stops them all.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Each run gets its own directory, so two runs never share a cluster.
mkdir -p "$ROOT/.tmp"
TMP="$(mktemp -d "$ROOT/.tmp/run-XXXXXX")"
KAFKA_LIBS="$ROOT/.tmp/kafka/libs" # shared: fetched once
CASSANDRA_LIBS="$ROOT/.tmp/cassandra/libs"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

wait_port() { # host port seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && { exec 3>&- 3<&-; return 0; }
    sleep 0.1
  done
  return 1
}

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }; done
  return 1
}

start_postgres() {
  local bin
  if ! bin=$(pg_bin); then
    echo "services: installing PostgreSQL (apt-get install postgresql)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || return 1
    bin=$(pg_bin) || return 1
  fi
  local data="$TMP/pg/data" port
  port=$(free_port)
  rm -rf "$TMP/pg" && mkdir -p "$TMP/pg"
  chown -R postgres:postgres "$TMP/pg" 2>/dev/null || true
  local as_pg=()
  [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
  # Parent directories must be traversable by the postgres user.
  chmod o+x "$ROOT" "$TMP" 2>/dev/null || true
  "${as_pg[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >"$TMP/pg/initdb.log" 2>&1 || { cat "$TMP/pg/initdb.log"; return 1; }
  cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$TMP/pg'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
fsync = off
full_page_writes = off
synchronous_commit = on
max_connections = 100
shared_buffers = 64MB
CONF
  echo "host replication all 127.0.0.1/32 trust" >>"$data/pg_hba.conf"
  # TLS with a throwaway CA, and a password user that may only connect over
  # it: the tests check sslmode=verify-full and that passwords stay secret.
  local tls="$TMP/pg/tls"
  make_certs "$tls" || return 1
  chown -R postgres:postgres "$tls" 2>/dev/null || true
  chmod 600 "$tls/server.key"
  cat >>"$data/postgresql.conf" <<CONF
ssl = on
ssl_cert_file = '$tls/server.pem'
ssl_key_file = '$tls/server.key'
CONF
  local tls_password
  tls_password=$(openssl rand -hex 16)
  { printf 'hostssl all outbox_tls 127.0.0.1/32 scram-sha-256\nhostnossl all outbox_tls 127.0.0.1/32 reject\n'; cat "$data/pg_hba.conf"; } >"$data/pg_hba.new"
  mv "$data/pg_hba.new" "$data/pg_hba.conf"
  chown postgres:postgres "$data/pg_hba.conf" 2>/dev/null || true
  "${as_pg[@]}" "$bin/pg_ctl" -D "$data" -l "$TMP/pg/server.log" -w -t 30 start >/dev/null || { cat "$TMP/pg/server.log"; return 1; }
  "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE outbox_test" >/dev/null || return 1
  "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE ROLE outbox_tls LOGIN SUPERUSER PASSWORD '$tls_password'" >/dev/null || return 1
  cat >"$TMP/pg/ctl.sh" <<CTL
#!/usr/bin/env bash
# Test helper: stop-immediate simulates a crash; start brings it back.
case "\$1" in
  stop-immediate) exec ${as_pg[*]} "$bin/pg_ctl" -D "$data" -m immediate -w stop ;;
  start) exec ${as_pg[*]} "$bin/pg_ctl" -D "$data" -l "$TMP/pg/server.log" -w -t 30 start ;;
  *) echo "usage: \$0 stop-immediate|start" >&2; exit 2 ;;
esac
CTL
  chmod +x "$TMP/pg/ctl.sh"
  export OUTBOX_TEST_PG_DSN="postgres://postgres@127.0.0.1:$port/outbox_test?sslmode=disable"
  export OUTBOX_TEST_PG_CTL="$TMP/pg/ctl.sh"
  export OUTBOX_TEST_PG_TLS_DSN="postgres://outbox_tls:$tls_password@localhost:$port/outbox_test?sslmode=verify-full&sslrootcert=$tls/ca.pem"
  PG_STOP=("${as_pg[@]}" "$bin/pg_ctl" -D "$data" -m fast -w stop)
  echo "services: PostgreSQL on 127.0.0.1:$port"
}

# make_certs DIR: a throwaway CA (ca.pem) and a server certificate for
# DNS:localhost only (server.pem, server.key, and both in keystore.pem), so
# tests can check both verification and a host-name mismatch (127.0.0.1).
make_certs() {
  local dir=$1
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=outbox test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" >/dev/null 2>&1 || return 1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$dir/server.key" -out "$dir/server.csr" >/dev/null 2>&1 || return 1
  printf 'subjectAltName=DNS:localhost\n' >"$dir/san.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
    -extfile "$dir/san.ext" -out "$dir/server.pem" >/dev/null 2>&1 || return 1
  cat "$dir/server.key" "$dir/server.pem" >"$dir/keystore.pem"
}

# plain_mvn runs Maven quietly and without colours. Debian's Maven 3.8.7
# still writes ESC[0m with -B -Dstyle.color=never, so sed strips what is
# left (pipefail keeps Maven's exit status).
plain_mvn() {
  mvn -q -B -Dstyle.color=never --no-transfer-progress "$@" 2>&1 | sed -u $'s/\x1b\\[[0-9;]*m//g'
}

start_kafka() {
  command -v java >/dev/null || { echo "services: java is required for Kafka" >&2; return 1; }
  local libs="$KAFKA_LIBS"
  if ! ls "$libs"/kafka_2.13-*.jar >/dev/null 2>&1; then
    echo "services: fetching Apache Kafka jars from Maven Central"
    command -v mvn >/dev/null || { echo "services: mvn is required to fetch Kafka" >&2; return 1; }
    plain_mvn -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies -DoutputDirectory="$libs" || return 1
  fi
  local port cport dir="$TMP/kafka/run"
  port=$(free_port); cport=$(free_port)
  rm -rf "$dir" && mkdir -p "$dir/logs"
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  cat >"$dir/log4j2.properties" <<LOG
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
LOG
  local java=(java -Xms256m -Xmx512m -XX:+UseSerialGC -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$libs/*")
  # --cluster-id=ID: a random ID may begin with "-", which a separate
  # argument would make look like an option.
  "${java[@]}" kafka.tools.StorageTool format --cluster-id="$(python3 -c 'import uuid,base64;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')" \
    -c "$dir/server.properties" >"$dir/logs/format.log" 2>&1 || { cat "$dir/logs/format.log"; return 1; }
  # The broker runs under a control script, so tests can SIGKILL it and
  # start it again (chaos R12); its current pid is kept in kafka.pid.
  local javacmd
  javacmd=$(printf '%q ' "${java[@]}")
  cat >"$dir/ctl.sh" <<CTL
#!/usr/bin/env bash
# Test helper: kill sends SIGKILL to the broker; start starts it again and
# waits until it listens.
case "\$1" in
  kill) kill -9 "\$(cat "$dir/kafka.pid")" 2>/dev/null; exit 0 ;;
  start)
    setsid $javacmd kafka.Kafka "$dir/server.properties" >>"$dir/logs/stdout.log" 2>&1 </dev/null &
    echo \$! >"$dir/kafka.pid"
    for _ in \$(seq 1 900); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && exit 0; sleep 0.1; done
    echo "kafka did not listen on $port" >&2; exit 1 ;;
  *) echo "usage: \$0 kill|start" >&2; exit 2 ;;
esac
CTL
  chmod +x "$dir/ctl.sh"
  KAFKA_DIR=$dir
  if ! "$dir/ctl.sh" start; then
    echo "services: Kafka did not listen on $port" >&2
    tail -30 "$dir/logs/stdout.log" "$dir/logs/server.log" >&2
    return 1
  fi
  export OUTBOX_TEST_KAFKA_BROKERS="127.0.0.1:$port"
  export OUTBOX_TEST_KAFKA_CTL="$dir/ctl.sh"
  echo "services: Apache Kafka on 127.0.0.1:$port"
}

# build_cdc_trigger DIR: compiles the ScyllaDB CDC emulation's trigger
# (scripts/cassandra/trigger) against the Cassandra jars into
# DIR/triggers, the node's triggers_dir: Cassandra loads triggers from
# there when it starts.
build_cdc_trigger() {
  local dir=$1
  command -v javac >/dev/null || { echo "services: javac (a JDK 17) is required for the CDC trigger" >&2; return 1; }
  rm -rf "$dir/trigger-classes" && mkdir -p "$dir/trigger-classes" "$dir/triggers"
  javac -nowarn -d "$dir/trigger-classes" -cp "$CASSANDRA_LIBS/*" \
    "$ROOT"/scripts/cassandra/trigger/src/dev/outbox/scyllaemu/*.java >"$dir/trigger-build.log" 2>&1 ||
    { cat "$dir/trigger-build.log" >&2; return 1; }
  jar cf "$dir/triggers/scyllaemu-trigger.jar" -C "$dir/trigger-classes" . || return 1
}

# start_scylla_emulation CASSANDRA_PORT: the CQL proxy that makes the
# node look like ScyllaDB to the driver and scylla-cdc-go
# (internal/scyllaemu); it stops with stop_services.
start_scylla_emulation() {
  local dir="$TMP/scyllaemu" port
  mkdir -p "$dir"
  (cd "$ROOT" && go build -o "$dir/scyllaemu" ./internal/scyllaemu/cmd/scyllaemu) || return 1
  port=$(free_port)
  "$dir/scyllaemu" -upstream "127.0.0.1:$1" -listen "127.0.0.1:$port" >"$dir/addr" 2>"$dir/proxy.log" &
  SCYLLAEMU_PID=$!
  if ! wait_port 127.0.0.1 "$port" 60; then
    echo "services: the ScyllaDB emulation did not listen on $port" >&2
    cat "$dir/proxy.log" >&2
    return 1
  fi
  export OUTBOX_TEST_SCYLLA_HOSTS="127.0.0.1:$port"
  echo "services: ScyllaDB CDC emulation (Cassandra + trigger + proxy) on 127.0.0.1:$port"
}

start_cassandra() {
  command -v java >/dev/null || { echo "services: java is required for Cassandra" >&2; return 1; }
  if ! ls "$CASSANDRA_LIBS"/cassandra-all-*.jar >/dev/null 2>&1; then
    echo "services: fetching Apache Cassandra jars from Maven Central"
    plain_mvn -f "$ROOT/scripts/cassandra/pom.xml" dependency:copy-dependencies -DoutputDirectory="$CASSANDRA_LIBS" || return 1
  fi
  local dir="$TMP/cassandra" port sport jport
  port=$(free_port); sport=$(free_port); jport=$(free_port)
  mkdir -p "$dir"
  build_cdc_trigger "$dir" || return 1
  make_certs "$dir/tls" || return 1
  cat >"$dir/cassandra.yaml" <<YAML
cluster_name: outbox-test
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
data_file_directories: [$dir/data]
commitlog_directory: $dir/commitlog
saved_caches_directory: $dir/caches
hints_directory: $dir/hints
# Acknowledged means on disk: with the default periodic sync (10 s, as in
# ScyllaDB) a SIGKILLed node replays its commit log only up to the last
# sync and loses what it acknowledged since (a one-node cluster has no
# other replica to keep it), which chaos R6 would blame on the outbox.
commitlog_sync: batch
# Tests drop their keyspaces (chaos one per scenario): no snapshot of each.
auto_snapshot: false
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$sport"
listen_address: 127.0.0.1
storage_port: $sport
native_transport_port: $port
rpc_address: 127.0.0.1
endpoint_snitch: SimpleSnitch
start_native_transport: true
# TLS is optional on the one port: plaintext tests keep working, and the
# TLS test connects with verification.
client_encryption_options:
  enabled: true
  optional: true
  ssl_context_factory:
    class_name: org.apache.cassandra.security.PEMBasedSslContextFactory
  keystore: $dir/tls/keystore.pem
YAML
  cat >"$dir/logback.xml" <<LOG
<configuration><appender name="F" class="ch.qos.logback.core.FileAppender"><file>$dir/system.log</file>
<encoder><pattern>%d %level %msg%n</pattern></encoder></appender><root level="WARN"><appender-ref ref="F"/></root></configuration>
LOG
  # Java 17 needs Cassandra's module openings (from its jvm17-server.options).
  local opens=() m
  for m in java.base/jdk.internal.misc java.base/jdk.internal.ref java.base/sun.nio.ch java.management.rmi/com.sun.jmx.remote.internal.rmi \
           java.rmi/sun.rmi.registry java.rmi/sun.rmi.server java.sql/java.sql; do opens+=(--add-exports "$m=ALL-UNNAMED"); done
  for m in java.base/java.lang.module java.base/jdk.internal.loader java.base/jdk.internal.ref java.base/jdk.internal.reflect \
           java.base/jdk.internal.math java.base/jdk.internal.module java.base/jdk.internal.util.jar jdk.management/com.sun.management.internal \
           java.base/java.io java.base/java.nio java.base/sun.nio.ch java.base/java.lang java.base/java.util java.base/java.util.concurrent \
           java.base/java.util.concurrent.atomic java.base/java.lang.reflect java.base/java.net; do opens+=(--add-opens "$m=ALL-UNNAMED"); done
  # CASSANDRA_HEAP: a smaller heap where several clusters share a machine.
  local heap=${CASSANDRA_HEAP:-1g}
  local java=(java -Xms"${CASSANDRA_HEAP_MIN:-512m}" -Xmx"$heap" -XX:+UseSerialGC "${opens[@]}" -Dcassandra.config="file://$dir/cassandra.yaml"
    -Dlogback.configurationFile="$dir/logback.xml" -Dcassandra-foreground=yes -Dcassandra.skip_wait_for_gossip_to_settle=0
    -Dcassandra.ring_delay_ms=100 -Dcassandra.jmx.local.port="$jport" -Dcassandra.storagedir="$dir"
    -Dcassandra.triggers_dir="$dir/triggers"
    -cp "$CASSANDRA_LIBS/*" org.apache.cassandra.service.CassandraDaemon)
  # The node runs under a control script, so tests can SIGKILL it and
  # start it again with the same command line, the trigger directory
  # included (chaos R6 on the ScyllaDB emulation); its current pid is kept
  # in cassandra.pid.
  local javacmd
  javacmd=$(printf '%q ' "${java[@]}")
  cat >"$dir/ctl.sh" <<CTL
#!/usr/bin/env bash
# Test helper: kill sends SIGKILL to the node and waits until it is gone;
# start starts it again and waits until it answers CQL.
case "\$1" in
  kill)
    pid=\$(cat "$dir/cassandra.pid" 2>/dev/null) || exit 0
    kill -9 "\$pid" 2>/dev/null || exit 0
    for _ in \$(seq 1 100); do kill -0 "\$pid" 2>/dev/null || exit 0; sleep 0.1; done
    echo "cassandra (pid \$pid) still runs after SIGKILL" >&2; exit 1 ;;
  start)
    setsid $javacmd >>"$dir/stdout.log" 2>&1 </dev/null &
    echo \$! >"$dir/cassandra.pid"
    for _ in \$(seq 1 1200); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && exit 0; sleep 0.1; done
    echo "cassandra did not listen on $port" >&2; exit 1 ;;
  *) echo "usage: \$0 kill|start" >&2; exit 2 ;;
esac
CTL
  chmod +x "$dir/ctl.sh"
  CASSANDRA_DIR=$dir
  if ! "$dir/ctl.sh" start; then
    echo "services: Cassandra did not listen on $port" >&2
    tail -30 "$dir/stdout.log" "$dir/system.log" >&2
    return 1
  fi
  export OUTBOX_TEST_CASSANDRA_HOSTS="127.0.0.1:$port"
  export OUTBOX_TEST_CASSANDRA_CTL="$dir/ctl.sh"
  export OUTBOX_TEST_CASSANDRA_TLS_CA="$dir/tls/ca.pem"
  echo "services: Apache Cassandra on 127.0.0.1:$port"
  start_scylla_emulation "$port"
}

stop_services() {
  if [ -n "${SCYLLAEMU_PID:-}" ]; then kill "$SCYLLAEMU_PID" 2>/dev/null || true; wait "$SCYLLAEMU_PID" 2>/dev/null || true; SCYLLAEMU_PID=; fi
  # The node's current pid: the control script may have restarted it.
  if [ -n "${CASSANDRA_DIR:-}" ] && [ -f "$CASSANDRA_DIR/cassandra.pid" ]; then
    local cpid
    cpid=$(cat "$CASSANDRA_DIR/cassandra.pid")
    kill "$cpid" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$cpid" 2>/dev/null || true
    CASSANDRA_DIR=
  fi
  if [ -n "${KAFKA_DIR:-}" ] && [ -f "$KAFKA_DIR/kafka.pid" ]; then
    local kpid
    kpid=$(cat "$KAFKA_DIR/kafka.pid")
    kill "$kpid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$kpid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$kpid" 2>/dev/null || true
    KAFKA_DIR=
  fi
  if [ -n "${PG_STOP:-}" ]; then "${PG_STOP[@]}" >/dev/null 2>&1 || true; PG_STOP=; fi
  rm -rf "$TMP" || true
}

start_services() {
  # Stop both on exit, keeping the run's own exit status.
  trap 'rc=$?; stop_services; exit $rc' EXIT
  local failed=0
  start_postgres || { echo "services: PostgreSQL did not start" >&2; failed=1; }
  start_kafka || { echo "services: Kafka did not start" >&2; failed=1; }
  start_cassandra || { echo "services: Cassandra did not start" >&2; failed=1; }
  return $failed
}
