package pgxoutbox_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/internal/writertest"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/pgxoutbox"
	"github.com/outbox-dev/outbox/store/postgres"
	"github.com/outbox-dev/outbox/store/storetest"
)

// newDB returns a store on a fresh database with the outbox-only
// migrations and a table of the caller's own.
func newDB(t *testing.T) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), testenv.PostgresDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.MigrateOutboxOnly(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(t.Context(), `CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return s
}

// appendInOwnTx writes a row of the caller's table and msgs in one
// transaction of the caller's pool, not the store's Transact.
func appendInOwnTx(s *postgres.Store) func(context.Context, []outbox.Message, bool) error {
	return func(ctx context.Context, msgs []outbox.Message, fail bool) error {
		return pgx.BeginFunc(ctx, s.Pool(), func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO users (id, email) VALUES ($1, 'x@example.com')`, msgs[0].ID.String()); err != nil {
				return err
			}
			if err := pgxoutbox.Append(ctx, tx, msgs...); err != nil {
				return err
			}
			if fail {
				return errors.New("rolled back on purpose")
			}
			return nil
		})
	}
}

// The store conformance suite, every event written by pgxoutbox.Append in
// the caller's transaction, read by CDC. The polling source reads the
// same rows with the same statement (the store's own suite), and its
// horizon is the whole server's oldest transaction, which a shared test
// server holds back at random; TestAnAggregatesEventsComeInCommitOrder
// polls.
func TestConformanceThroughPgxoutbox(t *testing.T) {
	t.Run("cdc", func(t *testing.T) {
		storetest.Run(t, storetest.Features{ConcurrentWriters: true, UniqueEventIDs: true}, func(t *testing.T) storetest.Harness {
			s := newDB(t)
			src, err := s.CDC(postgres.CDCConfig{Slot: fmt.Sprintf("slot_writer_%d", time.Now().UnixNano()), StatusInterval: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := src.Setup(t.Context()); err != nil {
				t.Fatal(err)
			}
			return storetest.Harness{Store: s, Source: src, Append: appendInOwnTx(s)}
		})
	})
}

// TestAnAggregatesEventsComeInCommitOrder: T1 takes its transaction id
// first (a write elsewhere), T2 appends A#1 and commits, T1 appends A#2
// and commits. Polling must return A#1 then A#2, although T1's id is the
// smaller: Append raises A#2's txid to A#1's (migration 0005).
func TestAnAggregatesEventsComeInCommitOrder(t *testing.T) {
	s := newDB(t)
	ctx := t.Context()
	t1, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer t1.Rollback(ctx)
	if _, err := t1.Exec(ctx, `INSERT INTO users VALUES ('other', 'o@example.com')`); err != nil {
		t.Fatal(err)
	}
	a1, a2 := message(t, 1), message(t, 2)
	if err := appendInOwnTx(s)(ctx, []outbox.Message{a1}, false); err != nil {
		t.Fatal(err)
	}
	if err := pgxoutbox.Append(ctx, t1, a2); err != nil {
		t.Fatal(err)
	}
	if err := t1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var got []int64
	testenv.Eventually(t, 10*time.Second, "both events fetched", func() bool {
		recs, err := s.Fetch(ctx, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, r := range recs {
			got = append(got, r.Message.Sequence)
		}
		return len(got) == 2
	})
	if got[0] != 1 || got[1] != 2 {
		t.Fatalf("polling returned sequences %v, want [1 2] (commit order)", got)
	}
}

func TestTraceContextOfTheCallerIsStored(t *testing.T) {
	s := newDB(t)
	ctx := writertest.TraceContext(t, t.Context())
	m := message(t, 1)
	m.Headers = map[string]string{"own": "kept"}
	if err := pgx.BeginFunc(ctx, s.Pool(), func(tx pgx.Tx) error { return pgxoutbox.Append(ctx, tx, m) }); err != nil {
		t.Fatal(err)
	}
	if len(m.Headers) != 1 {
		t.Fatalf("Append wrote to the caller's header map: %v", m.Headers)
	}
	testenv.Eventually(t, 10*time.Second, "the event is fetched", func() bool {
		recs, err := s.Fetch(ctx, "", 10)
		if err != nil || len(recs) != 1 {
			return false
		}
		writertest.CheckTraceHeaders(t, recs[0].Message)
		return true
	})
}

func TestAnInvalidMessageIsRefusedAndNothingWritten(t *testing.T) {
	s := newDB(t)
	bad := message(t, 1)
	bad.Payload = []byte("{")
	err := pgx.BeginFunc(t.Context(), s.Pool(), func(tx pgx.Tx) error { return pgxoutbox.Append(t.Context(), tx, message(t, 1), bad) })
	if !errors.Is(err, outbox.ErrInvalidMessage) {
		t.Fatalf("Append of an invalid message = %v, want ErrInvalidMessage", err)
	}
	var n int
	if err := s.Pool().QueryRow(t.Context(), `SELECT count(*) FROM outbox`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d rows after a refused append (%v), want 0", n, err)
	}
}

func message(t *testing.T, seq int64) outbox.Message {
	t.Helper()
	m, err := outbox.NewMessage("user", "u-1", "UserChanged", seq, map[string]int64{"seq": seq})
	if err != nil {
		t.Fatal(err)
	}
	return m
}
