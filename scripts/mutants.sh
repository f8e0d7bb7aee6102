#!/usr/bin/env bash
# Mutation testing: proofs that can fail. Each mutant is a small deliberate
# bug of the kind this project exists to prevent. For each, on a clean copy
# of the committed tree, the script applies the bug, runs the unit tests of
# the packages named and `outbox-lab chaos --quick`, and expects something to
# fail. A mutant that survives (every test and scenario passes with the bug
# in) means a proof is missing: the script then exits 1.
#
#   ./scripts/mutants.sh            # every mutant
#   ./scripts/mutants.sh M3 M7      # some
#   MUTANTS_BOTH=1 ./scripts/mutants.sh   # run chaos too when a unit test
#                                         # already caught the mutant
#
# With OUTBOX_TEST_PG_DSN and OUTBOX_TEST_KAFKA_BROKERS set (source
# scripts/services.sh; start_services), chaos also runs against PostgreSQL
# and Kafka; PostgreSQL-only mutants need them. It takes about 2 minutes a
# mutant on SQLite alone, so it does not run in CI: run it before
# resolving anything that touches the relay, the publisher or the stores.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# id | file | perl substitution (must change the file) | packages to test | what the bug is
MUTANTS=(
  'M1|relay/publish.go|s/(\t\tr\.roundFailed\(msgs\[0\], f, err\)\n)/$1\t\treturn 0, f.attempts, outbox.Permanent(err)\n/|./relay|a round of transient failures becomes permanent (the design'"'"'s DLQ after 5 failures)'
  'M2|relay/window.go|s/\tif w\.head != nil \{\n\t\tc = checkpointTarget\{pos: w\.head\.before, seq: w\.head\.seq - 1\}\n\t\}\n//|./relay|entries count as settled when read: the checkpoint passes unacknowledged events'
  'M3|relay/publish.go|s/\tparked := r\.parked\[key\]\n/\tparked := false \&\& r.parked[key]\n/|./relay|parking ignored: later events overtake their aggregate'"'"'s dead letter'
  'M4|relay/relay.go|s/\t\t\tif err := r\.commit\(ctx\); err != nil \&\& ctx\.Err\(\) == nil \{/\t\t\tif err := error(nil); err != nil \&\& ctx.Err() == nil {/|./relay|no periodic checkpoint: every crash republishes everything'
  'M5|kafka/record.go|s/\{Key: outbox\.HeaderType, Value: value\(append\(buf, m\.Type\.\.\.\)\)\}/{Key: outbox.HeaderType}/|./kafka ./checker|the type header sent empty'
  'M6|kafka/runs.go|s/(\t\treq\.recs\[i\] = Record\(m, topic\)\n)/$1\t\tif m.ID[15]%50 == 0 {\n\t\t\tcp := m\n\t\t\tcp.ID[0] ^= 0xff\n\t\t\tp.client.ProduceSync(ctx, Record(cp, topic))\n\t\t}\n/|./kafka|every 50th event of a run also published as a copy under a fresh id'
  'M7|relay/relay.go|s/\t\tit := l\.queue\[0\]\n/\t\tif len(l.queue) > 1 \&\& l.queue[0].action == nil \&\& l.queue[1].action == nil {\n\t\t\tl.queue[0], l.queue[1] = l.queue[1], l.queue[0]\n\t\t}\n\t\tit := l.queue[0]\n/|./relay|events of one aggregate swapped within its lane'
  'M8|kafka/record.go|s/\t\tKey:       headers\[3\]\.Value,/\t\tKey:       headers[0].Value,/|./kafka|records keyed by event id instead of aggregate id'
  'M9|relay/publish.go|s/(func \(r \*run\) handle\(ctx context\.Context, msgs \[\]outbox\.Message, announced int, tried \*groupAttempt\) int \{\n)/$1\tif msgs[0].ID[15]%97 == 0 {\n\t\treturn 1\n\t}\n/|./relay|some events settled (and checkpointed) without being published'
  'M10|relay/relay.go|s/case i == 0:\n/case len(entries) > 0:\n\t\t\ti = 0\n/|./relay|an interrupted skip skips whatever entry is first by then'
  'M11|relay/publish.go|s/ \&\& r\.lastAck\.Load\(\) >= since\.UnixNano\(\)//|./relay|an outage parks aggregates once StuckTimeout passes'
  'M12|relay/relay.go|s/\t\tr\.br\.Trip\(\)\n/\t\t_ = r.br\n/|./relay ./kafka|the breaker never hears that the broker is unreachable'
  'M13|store/postgres/poll.go|s/ORDER BY outbox\.txid, outbox\.position LIMIT/ORDER BY txid, position LIMIT/|./store/postgres|polling sorts transaction ids as text'
  'M15|relay/publish.go|s/\t\tif outbox\.IsPermanent\(err\) \&\& len\(msgs\) > 1 \{\n.*?\n\t\t\}\n//s|./relay|a run refused permanently dead-letters its first message without finding the one that failed'
  'M16|relay/publish.go|s/(\tif parked \{\n)/$1\t\tr.publish(ctx, msgs[:1], 0, nil)\n/|./relay|events behind a dead letter published anyway (and parked too), before the operator acts'
  'M17|relay/relay.go|s/(\t\t\tcase drainCtx\.Err\(\) == nil \&\& !errors\.Is\(results\[i\]\.Err, errFenced\):\n\t\t\t\tl\.tried = [^\n]*\n)\t\t\t\talone = append\(alone, l\)\n/$1\t\t\t\tr.settle(l, 1)\n\t\t\t\theld = append(held, l)\n/|./relay|an event that failed in a group of aggregates is settled as if published'
  'M18|kafka/publisher.go|s/^const stragglerWait = 50 \* time\.Millisecond$/const stragglerWait = time.Hour/m|./kafka ./relay|a round of many aggregates waits for its slowest record, up to the attempt'"'"'s deadline'
  'M19|relay/relay.go|s/(\t\t\tcase drainCtx\.Err\(\) == nil \&\& errors\.Is\(results\[i\]\.Err, outbox\.ErrInFlight\):\n)\t\t\t\talone = append\(alone, l\)[^\n]*\n/$1\t\t\t\tl.tried = \&groupAttempt{at: began, err: results[i].Err}\n\t\t\t\talone = append(alone, l)\n/|./relay|a record still in flight when its round ended counts as a failed attempt'
  'M20|kafka/runs.go|s/^\t\t\tf\.placing\.wait\(n\)$/\t\t\t_ = n/m|./kafka|a run flushed while the client still places its records sends it in several requests'
  'M21|kafka/publisher.go|s/\treturn max\(stragglerWait, elapsed\)/\treturn elapsed/|./kafka|a round gives up on a straggler as soon as the first answer took, with no floor'
  'M22|kafka/runs.go|s/context\.WithTimeout\(context\.Background\(\), after\)/context.WithCancel(context.Background())/|./kafka|a flush that began before the client showed a new topic'"'"'s partitions is never begun again: it waits for ever'
  'M14|relay/window.go|s/(func \(w \*window\) settle\(e \*entry\) \{\n)/$1\tif e != w.head {\n\t\treturn\n\t}\n/|./relay|settled records behind a stuck one are never removed: the window grows'
)

want=("$@")
picked() { [ ${#want[@]} -eq 0 ] && return 0; local w; for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "mutants: copying the committed tree to $work"
git -C "$ROOT" archive HEAD | tar -x -C "$work"

chaos_args=(chaos --quick)
if [ -n "${OUTBOX_TEST_PG_DSN:-}" ] && [ -n "${OUTBOX_TEST_KAFKA_BROKERS:-}" ]; then
  chaos_args+=(--postgres "$OUTBOX_TEST_PG_DSN" --kafka "$OUTBOX_TEST_KAFKA_BROKERS" --pg-ctl "${OUTBOX_TEST_PG_CTL:-}" --kafka-ctl "${OUTBOX_TEST_KAFKA_CTL:-}" --poll=false)
fi

# A mutant counts as caught only by a named failure: a test's "--- FAIL" or a
# chaos scenario's "FAILED: <reason>". A build error, a skipped scenario or
# a flaky baseline is not a catch, so the clean tree must pass first.
unit_failure() { grep -m1 -oE -- '--- FAIL: [A-Za-z0-9_/]+' "$1" | sed 's/--- FAIL: //'; }
chaos_failures() { grep -oE '^chaos: [a-z+-]+ R[0-9]+ FAILED: .+' "$1" | sed -E 's/^chaos: ([a-z+-]+) (R[0-9]+) FAILED.*/\1 \2/; s/sqlite\+kfake //; s/postgres\+kafka /pg:/; s/scylla\+kafka /scylla:/' | paste -sd, -; }
run_chaos() { (cd "$work" && go build -o "$work/bin/outbox" ./cmd/outbox && go build -o "$work/bin/outbox-lab" ./cmd/outbox-lab && "$work/bin/outbox-lab" "${chaos_args[@]}" --outbox "$work/bin/outbox"); }

all_pkgs=$(for m in "${MUTANTS[@]}"; do IFS='|' read -r id _ _ pkgs _ <<<"$m"; picked "$id" && echo "$pkgs"; done | tr ' ' '\n' | sort -u | tr '\n' ' ')
echo "mutants: baseline (the clean tree must pass): go test $all_pkgs and ${chaos_args[*]}"
# shellcheck disable=SC2086
if ! (cd "$work" && go test -count=1 -timeout 10m $all_pkgs) >"$work/baseline.log" 2>&1; then
  echo "mutants: the clean tree fails its tests, so no mutant can be judged:" >&2
  grep -E -- '--- FAIL|^FAIL' "$work/baseline.log" >&2
  exit 2
fi
if ! run_chaos >"$work/baseline.chaos" 2>&1; then
  echo "mutants: the clean tree fails chaos, so no mutant can be judged:" >&2
  grep -E 'FAILED|SKIPPED' "$work/baseline.chaos" >&2
  exit 2
fi

survived=()
printf '%-4s %-9s %-40s %s\n' id verdict "caught by" bug
for m in "${MUTANTS[@]}"; do
  IFS='|' read -r id file subst pkgs what <<<"$m"
  picked "$id" || continue
  if [[ "$pkgs" == *store/postgres* ]] && [ -z "${OUTBOX_TEST_PG_DSN:-}" ]; then
    printf '%-4s %-9s %-40s %s\n' "$id" "NOT RUN" "(needs OUTBOX_TEST_PG_DSN)" "$what"
    survived+=("$id")
    continue
  fi
  cp "$work/$file" "$work/$file.orig"
  perl -0pi -e "$subst" "$work/$file"
  if cmp -s "$work/$file" "$work/$file.orig"; then
    printf '%-4s %-9s %-40s %s\n' "$id" "BROKEN" "(the substitution matched nothing)" "$what"
    survived+=("$id")
    continue
  fi
  if ! (cd "$work" && go build ./...) >"$work/$id.build" 2>&1; then
    mv "$work/$file.orig" "$work/$file"
    printf '%-4s %-9s %-40s %s\n' "$id" "BROKEN" "(the mutant does not compile)" "$what"
    survived+=("$id")
    continue
  fi
  caught=""
  log="$work/$id.log"
  # shellcheck disable=SC2086
  (cd "$work" && go test -count=1 -timeout 10m $pkgs) >"$log" 2>&1
  failed=$(unit_failure "$log")
  [ -n "$failed" ] && caught="unit: $failed"
  if [ -z "$caught" ] || [ -n "${MUTANTS_BOTH:-}" ]; then
    run_chaos >"$log.chaos" 2>&1
    failed=$(chaos_failures "$log.chaos")
    if [ -n "$failed" ]; then
      caught="${caught:+$caught; }chaos: $failed"
    elif [ -n "$caught" ]; then
      caught="$caught; chaos: nothing"
    fi
  fi
  mv "$work/$file.orig" "$work/$file"
  if [ -n "$caught" ]; then
    printf '%-4s %-9s %-60.60s %s\n' "$id" caught "$caught" "$what"
  else
    printf '%-4s %-9s %-40s %s\n' "$id" SURVIVED "-" "$what"
    survived+=("$id")
  fi
done
if [ ${#survived[@]} -gt 0 ]; then
  echo "mutants: ${#survived[@]} survived or could not be applied: ${survived[*]}" >&2
  exit 1
fi
echo "mutants: every mutant was caught"
