package scylla

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/storetest"
)

// liveRowsRead runs f with query tracing on and returns how many live rows
// the node says its reads returned.
func liveRowsRead(t *testing.T, s *Store, f func()) int {
	t.Helper()
	var buf strings.Builder
	s.session.SetTrace(gocql.NewTraceWriter(s.session, &buf))
	f()
	s.session.SetTrace(nil)
	n := 0
	for _, m := range regexp.MustCompile(`Read (\d+) live rows`).FindAllStringSubmatch(buf.String(), -1) {
		c, _ := strconv.Atoi(m[1])
		n += c
	}
	return n
}

// Dead letters were one partition, and finding an aggregate's parked
// entries, or counting them for the relay's poll of parked aggregates
// (every second), read all of it, resolved entries included. Now the
// table is split into partitions of consecutive ids, and an index names
// each aggregate's parked entries: adding one, listing an aggregate's and
// counting read only that aggregate's, while listing everything pages
// through the partitions in id order.
func TestCassandraDeadLettersArePartitionedAndIndexed(t *testing.T) {
	t.Parallel()
	s, ks := cassandra(t)
	s.dlqBucketSize = 10
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Microsecond)
	var added []outbox.DeadLetter
	for i := range 60 {
		m := storetest.Msg(t, fmt.Sprintf("a%d", i%6), int64(i/6+1))
		d, err := s.AddDeadLetter(ctx, outbox.DeadLetter{Message: m, Error: "poison", FailureCount: 1, FirstFailedAt: now, LastFailedAt: now})
		if err != nil {
			t.Fatal(err)
		}
		added = append(added, d)
	}
	for _, d := range added {
		if d.Message.AggregateID != "a0" {
			if err := s.ResolveDeadLetter(ctx, d.ID, outbox.StatusSkipped, "test"); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := 1; i < 6; i++ {
		if err := s.CompleteAction(ctx, outbox.AggregateKey{Type: "order", ID: fmt.Sprintf("a%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	var partitions int
	iter := s.session.Query(`SELECT DISTINCT bucket FROM ` + ks + `.dead_letter_queue`).Iter()
	var b int
	for iter.Scan(&b) {
		partitions++
	}
	if err := iter.Close(); err != nil || partitions < 6 {
		t.Fatalf("60 dead letters in %d partitions (%v), want them split by id", partitions, err)
	}
	var parked []outbox.ParkedAggregate
	rows := liveRowsRead(t, s, func() {
		var err error
		if parked, err = s.ParkedAggregates(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if len(parked) != 1 || parked[0].Key.ID != "a0" || parked[0].ParkedEvents != 10 {
		t.Fatalf("parked aggregates %+v, want a0 with 10 events", parked)
	}
	if rows > 25 {
		t.Fatalf("listing 1 parked aggregate of 10 entries read %d rows: it reads the dead-letter history", rows)
	}
	var msgs []outbox.DeadLetter
	rows = liveRowsRead(t, s, func() {
		var err error
		if msgs, err = s.ParkedMessages(ctx, outbox.AggregateKey{Type: "order", ID: "a0"}); err != nil {
			t.Fatal(err)
		}
	})
	if len(msgs) != 10 || !slices.IsSortedFunc(msgs, func(a, b outbox.DeadLetter) int { return int(a.ID - b.ID) }) || rows > 25 {
		t.Fatalf("a0's parked messages: %d, read %d rows; want its 10 in id order, reading no other aggregate's", len(msgs), rows)
	}
	t.Logf("ParkedAggregates and ParkedMessages read %d rows or fewer, of 60 entries", rows)
	// Listing pages through the partitions in id order.
	var listed []int64
	for after := int64(0); ; {
		page, err := s.ListDeadLetters(ctx, outbox.DeadLetterFilter{AfterID: after, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, d := range page {
			listed = append(listed, d.ID)
		}
		after = page[len(page)-1].ID
	}
	if len(listed) != 60 || !slices.IsSorted(listed) {
		t.Fatalf("listed %d entries (%v), want all 60 in id order", len(listed), listed)
	}
}

// Dead letters written by an earlier release, in its single partition,
// stay readable after Migrate: listed in id order with the new ones,
// their parked entries indexed, and one written there by a relay of that
// release after the migrate is still found by id (and indexed by the next
// migrate).
func TestCassandraDeadLettersOfAnEarlierReleaseStayReadable(t *testing.T) {
	t.Parallel()
	s, ks := cassandra(t)
	ctx := t.Context()
	opts := SchemaConfig{WithoutCDC: true, Replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}"}
	legacy := func(id int64, agg, status string) outbox.Message {
		m := storetest.Msg(t, agg, id)
		if err := s.session.Query(`INSERT INTO `+ks+`.dead_letter_queue (bucket, `+deadLetterColumns+`)
			VALUES (0, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'old', 1, 0, 0, ?, '', 0, 0, '')`,
			id, gocql.UUID(m.ID), m.AggregateType, m.AggregateID, m.Type, m.Sequence, string(m.Payload), m.Headers, micros(m.Timestamp), status).Exec(); err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, q := range []string{
		`DELETE FROM ` + ks + `.outbox_sequences WHERE name = 'dead_letter_buckets_from'`,
		`INSERT INTO ` + ks + `.outbox_sequences (name, next) VALUES ('dead_letter', 4)`,
		`INSERT INTO ` + ks + `.parked_aggregates (aggregatetype, aggregateid, parked_at, pending_action, pending_entry, reason, requested_at, last_error)
			VALUES ('order', 'old', 0, '', 0, '', 0, '')`,
	} {
		if err := s.session.Query(q).Exec(); err != nil {
			t.Fatal(err)
		}
	}
	legacy(1, "old", string(outbox.StatusParked))
	legacy(2, "done", string(outbox.StatusSkipped))
	legacy(3, "old", string(outbox.StatusParked))
	if err := Migrate(ctx, s.session, ks, opts); err != nil {
		t.Fatal(err)
	}
	s.dlqFrom.Store(0)
	now := time.Now().UTC()
	added, err := s.AddDeadLetter(ctx, outbox.DeadLetter{Message: storetest.Msg(t, "old", 9), Error: "new", FirstFailedAt: now, LastFailedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	if added.ID != 4 || added.ParkedBehind == "" {
		t.Fatalf("new entry %d parked behind %q, want id 4 behind the old aggregate's first entry", added.ID, added.ParkedBehind)
	}
	// A relay of the earlier release, still running, adds entry 5 to bucket 0.
	if err := s.session.Query(`UPDATE ` + ks + `.outbox_sequences SET next = 6 WHERE name = 'dead_letter'`).Exec(); err != nil {
		t.Fatal(err)
	}
	straggler := legacy(5, "old", string(outbox.StatusParked))
	if d, err := s.GetDeadLetter(ctx, 5); err != nil || d.Message.ID != straggler.ID {
		t.Fatalf("entry 5 in the old partition: %+v, %v", d, err)
	}
	all, err := s.ListDeadLetters(ctx, outbox.DeadLetterFilter{Limit: -1})
	var ids []int64
	for _, d := range all {
		ids = append(ids, d.ID)
	}
	if err != nil || fmt.Sprint(ids) != "[1 2 3 4 5]" {
		t.Fatalf("listed %v (%v), want 1..5 in order", ids, err)
	}
	if err := Migrate(ctx, s.session, ks, opts); err != nil {
		t.Fatal(err)
	}
	parked, err := s.ParkedMessages(ctx, outbox.AggregateKey{Type: "order", ID: "old"})
	ids = nil
	for _, d := range parked {
		ids = append(ids, d.ID)
	}
	if err != nil || fmt.Sprint(ids) != "[1 3 4 5]" {
		t.Fatalf("the old aggregate's parked entries %v (%v), want [1 3 4 5]", ids, err)
	}
	aggs, err := s.ParkedAggregates(ctx)
	if err != nil || len(aggs) != 1 || aggs[0].ParkedEvents != 4 {
		t.Fatalf("parked aggregates %+v (%v), want the old one with 4 events", aggs, err)
	}
}
