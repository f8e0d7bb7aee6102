package postgres_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/poll"
)

// A transaction's id is taken at its first write, not at its commit. T1
// writes another table first, T2 appends A#1 and commits, then T1 appends
// A#2 and commits: polling must still return A#1 first, for any caller of
// Append, as logical replication does.
func TestPollingReturnsAnAggregatesEventsInCommitOrder(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	if _, err := s.Pool().Exec(ctx, `CREATE TABLE other (v int)`); err != nil {
		t.Fatal(err)
	}
	t1, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer t1.Rollback(ctx)
	if _, err := t1.Exec(ctx, `INSERT INTO other VALUES (1)`); err != nil { // T1 has its id now
		t.Fatal(err)
	}
	a1, a2 := msg(t, "a", 1), msg(t, "a", 2)
	if err := appendFunc(s)(ctx, []outbox.Message{a1}, false); err != nil { // T2
		t.Fatal(err)
	}
	if err := s.Append(ctx, t1, a2); err != nil {
		t.Fatal(err)
	}
	if err := t1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	src, _ := poll.NewSource(s, poll.Config{Interval: 5 * time.Millisecond})
	cur, err := src.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	got := drain(t, cur, 2, 10*time.Second)
	if len(got) != 2 || got[0].Message.ID != a1.ID || got[1].Message.ID != a2.ID {
		var seqs []int64
		for _, r := range got {
			seqs = append(seqs, r.Message.Sequence)
		}
		t.Fatalf("polling returned sequences %v, want [1 2] (commit order)", seqs)
	}
}

// Under REPEATABLE READ, appending after an event of the same aggregate
// that committed since the transaction began cannot take its place in
// commit order without seeing it: it fails with a serialization error,
// which the caller retries, rather than commit an event out of order.
func TestRepeatableReadAppendBehindANewerEventFailsToSerialize(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	if _, err := s.Pool().Exec(ctx, `CREATE TABLE other (v int)`); err != nil {
		t.Fatal(err)
	}
	t1, err := s.Pool().BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer t1.Rollback(ctx)
	if _, err := t1.Exec(ctx, `INSERT INTO other VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	if err := appendFunc(s)(ctx, []outbox.Message{msg(t, "a", 1)}, false); err != nil {
		t.Fatal(err)
	}
	err = s.Append(ctx, t1, msg(t, "a", 2))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "40001" {
		t.Fatalf("append behind a newer event under REPEATABLE READ: %v, want a serialization failure (40001)", err)
	}
}
