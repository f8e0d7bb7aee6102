#!/usr/bin/env bash
# The whole test suite: vet, then every package with the race detector.
# It installs and starts what the tests need (PostgreSQL from Debian's
# packages, Apache Kafka from Maven Central, both on loopback, stopped on
# exit); with OUTBOX_REQUIRE_SERVICES=1
# (as CI sets it) a service that cannot be started fails the run instead of
# skipping its tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v go >/dev/null 2>&1; then
  echo "test.sh: Go 1.26 or newer is required (https://go.dev/dl)" >&2
  exit 1
fi

echo "== go vet"
go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi

echo "== services"
# shellcheck source=services.sh
source scripts/services.sh
if ! start_services; then
  if [ "${OUTBOX_REQUIRE_SERVICES:-}" = 1 ]; then
    echo "test.sh: a required service did not start (OUTBOX_REQUIRE_SERVICES=1)" >&2
    exit 1
  fi
  echo "test.sh: continuing; tests that need the missing service will skip" >&2
fi

echo "== chromium (the web console's browser test)"
# Debian's chromium, driven by chromedp in cmd/outbox's console test; a
# missing browser skips that test (fails it with OUTBOX_REQUIRE_SERVICES=1).
if ! command -v chromium >/dev/null 2>&1; then
  echo "test.sh: installing chromium (apt-get install chromium)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ||
    echo "test.sh: chromium could not be installed; the console's browser test will skip" >&2
fi
# Screenshots and other artefacts of the tests land here.
export OUTBOX_TEST_ARTIFACTS="${OUTBOX_TEST_ARTIFACTS:-$PWD/.tmp/artifacts}"
mkdir -p "$OUTBOX_TEST_ARTIFACTS"

echo "== go test -race"
go test -race -count=1 -timeout 25m ./... "$@"

# The fault matrix against the real binary, after the tests: it stops
# PostgreSQL and Cassandra hard (R6), which must not happen under another
# package's test. Any failed or skipped scenario exits 1.
echo "== outbox-lab chaos --quick (against the outbox binary)"
mkdir -p .tmp
go build -o .tmp/outbox ./cmd/outbox && go build -o .tmp/outbox-lab ./cmd/outbox-lab
chaos_args=(chaos --quick --history .tmp/chaos)
if [ -n "${OUTBOX_TEST_KAFKA_BROKERS:-}" ] && [ -n "${OUTBOX_TEST_PG_DSN:-}${OUTBOX_TEST_SCYLLA_HOSTS:-}" ]; then
  chaos_args+=(--kafka "$OUTBOX_TEST_KAFKA_BROKERS" --kafka-ctl "${OUTBOX_TEST_KAFKA_CTL:-}")
fi
if [ -n "${OUTBOX_TEST_PG_DSN:-}" ] && [ -n "${OUTBOX_TEST_KAFKA_BROKERS:-}" ]; then
  chaos_args+=(--postgres "$OUTBOX_TEST_PG_DSN" --pg-ctl "${OUTBOX_TEST_PG_CTL:-}")
elif [ "${OUTBOX_REQUIRE_SERVICES:-}" = 1 ]; then
  echo "test.sh: chaos needs PostgreSQL and Kafka (OUTBOX_REQUIRE_SERVICES=1)" >&2
  exit 1
fi
# ScyllaDB CDC on the emulation (Cassandra + CDC-log trigger + CQL proxy).
if [ -n "${OUTBOX_TEST_SCYLLA_HOSTS:-}" ] && [ -n "${OUTBOX_TEST_KAFKA_BROKERS:-}" ]; then
  chaos_args+=(--scylla "$OUTBOX_TEST_SCYLLA_HOSTS" --cassandra-ctl "${OUTBOX_TEST_CASSANDRA_CTL:-}")
elif [ "${OUTBOX_REQUIRE_SERVICES:-}" = 1 ]; then
  echo "test.sh: chaos needs the ScyllaDB emulation and Kafka (OUTBOX_REQUIRE_SERVICES=1)" >&2
  exit 1
fi
.tmp/outbox-lab "${chaos_args[@]}" --outbox .tmp/outbox
