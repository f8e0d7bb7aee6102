#!/usr/bin/env bash
# Side-by-side comparison of the outbox relay with Debezium (embedded engine
# + outbox EventRouter) and Watermill's forwarder on the same PostgreSQL and
# the same Apache Kafka. See README.md beside this file.
#
#   bash bench/peers/run.sh            # full run: 3 rounds (~30 min)
#   bash bench/peers/run.sh -quick     # 1 round, 10k events, 10 s per rate
#   bash bench/peers/run.sh -rounds 5 -systems outbox-cdc,debezium
#
# Arguments are passed to the driver (bench/peers/cmd/peers). It uses
# OUTBOX_TEST_PG_DSN and OUTBOX_TEST_KAFKA_BROKERS when they are set;
# otherwise it starts PostgreSQL and Kafka with scripts/services.sh (in
# .tmp/) and stops them when it exits.
#
# Writes bench/peers/results/latest.json and latest.md (and, for a full run
# without -quick, RESULTS_TABLE.md, which RESULTS.md quotes).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="$HERE/.work"
mkdir -p "$WORK" "$HERE/results"

if [ -z "${OUTBOX_TEST_PG_DSN:-}" ] || [ -z "${OUTBOX_TEST_KAFKA_BROKERS:-}" ]; then
  echo "peers: OUTBOX_TEST_PG_DSN / OUTBOX_TEST_KAFKA_BROKERS not set: starting PostgreSQL and Kafka (scripts/services.sh)"
  # shellcheck source=../../scripts/services.sh
  source "$ROOT/scripts/services.sh"
  trap 'rc=$?; stop_services; exit $rc' EXIT
  start_postgres
  start_kafka
fi

# The revision measured: the working tree's HEAD, and whether files outside
# bench/peers differed from it when outbox was built.
rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$(git -C "$ROOT" status --porcelain -- . ':!bench/peers' 2>/dev/null | awk '{print $2}' | tr '\n' ' ')"
[ -n "$dirty" ] && rev="$rev (working tree; uncommitted changes in: ${dirty% })"

echo "peers: building outbox, the Watermill forwarder, the driver and the Debezium peer"
(cd "$ROOT" && go build -o "$WORK/outbox" ./cmd/outbox)
(cd "$HERE" && go build -o "$WORK/watermill-forwarder" ./cmd/watermill-forwarder && go build -o "$WORK/peers" ./cmd/peers)
(cd "$HERE/debezium" && rm -rf target/deps && mvn -B -q -Dstyle.color=never --no-transfer-progress package -DskipTests dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=target/deps 2>&1 | sed -u $'s/\x1b\\[[0-9;]*m//g') # Maven 3.8.7 writes ESC[0m even so

out="$HERE/results/latest"
quick=0
for a in "$@"; do [ "$a" = "-quick" ] || [ "$a" = "--quick" ] && quick=1; done
[ "$quick" = 1 ] && out="$HERE/results/quick"

"$WORK/peers" \
  -pg "$OUTBOX_TEST_PG_DSN" -brokers "$OUTBOX_TEST_KAFKA_BROKERS" \
  -outbox "$WORK/outbox" -forwarder "$WORK/watermill-forwarder" -debezium "$HERE/debezium" \
  -outbox-rev "$rev" -work "$WORK/run-$(date +%Y%m%d-%H%M%S)" \
  -json "$out.json" -md "$out.md" "$@"
echo "peers: wrote $out.json and $out.md"
