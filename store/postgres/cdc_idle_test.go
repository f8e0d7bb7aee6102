package postgres_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/postgres"
)

// An idle outbox must not pin WAL written for other tables: once every
// event handed to the relay is acknowledged, the slot is confirmed up to
// the server's WAL end. While an event is handed over and not yet
// acknowledged, it is not: confirming past it would let a restart skip it.
func TestCDCConfirmsToTheWALEndWhenIdle(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	slot := fmt.Sprintf("idle_%d", time.Now().UnixNano()%1e9)
	src := cdc(t, s, postgres.CDCConfig{Slot: slot})
	if _, err := src.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	cur, err := src.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if _, err := s.Pool().Exec(ctx, `CREATE TABLE elsewhere (n int)`); err != nil {
		t.Fatal(err)
	}
	// Writes to another table only, then the server's WAL end.
	writeElsewhere := func() pglogrepl.LSN {
		t.Helper()
		if _, err := s.Pool().Exec(ctx, `INSERT INTO elsewhere SELECT generate_series(1, 5000)`); err != nil {
			t.Fatal(err)
		}
		var end pglogrepl.LSN
		if err := s.Pool().QueryRow(ctx, `SELECT pg_current_wal_flush_lsn()`).Scan(&end); err != nil {
			t.Fatal(err)
		}
		return end
	}
	slotConfirmed := func() pglogrepl.LSN {
		t.Helper()
		var lsn pglogrepl.LSN
		if err := s.Pool().QueryRow(ctx, `SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lsn); err != nil {
			t.Fatal(err)
		}
		return lsn
	}
	appendOne := func(seq int64) outbox.Message {
		t.Helper()
		m := msg(t, "a", seq)
		if err := appendFunc(s)(ctx, []outbox.Message{m}, false); err != nil {
			t.Fatal(err)
		}
		return m
	}
	// readOne reads the event just committed and returns its position.
	readOne := func(want outbox.Message) outbox.Position {
		t.Helper()
		got := drain(t, cur, 1, 10*time.Second)
		if len(got) != 1 || got[0].Message.ID != want.ID {
			t.Fatalf("read %d records, want the event just committed", len(got))
		}
		return got[0].Position
	}

	// Everything acknowledged: the slot follows the WAL end.
	for i := range 3 {
		pos := readOne(appendOne(int64(i + 1)))
		if err := cur.Commit(ctx, pos); err != nil {
			t.Fatal(err)
		}
	}
	end := writeElsewhere()
	testenv.Eventually(t, 10*time.Second, "the slot confirmed up to the WAL end while idle", func() bool {
		return slotConfirmed() >= end && src.ConfirmedLSN() >= end
	})

	// One event handed over and not acknowledged: the slot stays before it
	// however much is written elsewhere.
	pendingPos := readOne(appendOne(4))
	pending, err := pglogrepl.ParseLSN(string(pendingPos))
	if err != nil {
		t.Fatal(err)
	}
	before := slotConfirmed()
	writeElsewhere()
	var since time.Time
	if err := s.Pool().QueryRow(ctx, `SELECT now()`).Scan(&since); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "status updates after the writes", func() bool {
		var reply time.Time
		err := s.Pool().QueryRow(ctx, `SELECT r.reply_time FROM pg_stat_replication r
			JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = $1`, slot).Scan(&reply)
		return err == nil && reply.After(since.Add(500*time.Millisecond))
	})
	if got := slotConfirmed(); got >= pending || got < before {
		t.Fatalf("with event at %s unacknowledged the slot is confirmed at %s (was %s): it must stay before the event", pending, got, before)
	}

	// Acknowledged: idle again, the slot catches up with the WAL end.
	if err := cur.Commit(ctx, pendingPos); err != nil {
		t.Fatal(err)
	}
	end = writeElsewhere()
	testenv.Eventually(t, 10*time.Second, "the slot confirmed up to the WAL end once idle again", func() bool {
		return slotConfirmed() >= end
	})
}
