package postgres_test

import (
	"context"
	"io"
	"net"
	"net/url"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/postgres"
)

// withParam adds a server setting to a DSN, for every connection it opens.
func withParam(t *testing.T, dsn, key, value string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// The relay stops taking rows (its breaker is open, its window full) for
// longer than the server's wal_sender_timeout, with far more committed
// than the cursor buffers: the cursor keeps answering the server, so the
// stream is still there when the relay reads again.
func TestCDCKeepsAnsweringTheServerWhileTheRelayDoesNotRead(t *testing.T) {
	_, base := newDB(t)
	s, err := postgres.Open(t.Context(), withParam(t, base, "wal_sender_timeout", "1000"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	src := cdc(t, s, postgres.CDCConfig{})
	if _, err := src.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	const txs, per = 60, 10
	for i := range txs {
		var msgs []outbox.Message
		for j := range per {
			msgs = append(msgs, msg(t, "a", int64(i*per+j+1)))
		}
		if err := appendFunc(s)(t.Context(), msgs, false); err != nil {
			t.Fatal(err)
		}
	}
	cur, err := src.Open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	first := drain(t, cur, 1, 10*time.Second)
	// Three times the server's timeout without a read.
	<-time.After(3 * time.Second)
	rest := drain(t, cur, txs*per-len(first), 20*time.Second)
	got := append(first, rest...)
	if len(got) != txs*per {
		t.Fatalf("read %d rows after the pause, want %d", len(got), txs*per)
	}
	for i, r := range got {
		if r.Message.Sequence != int64(i+1) {
			t.Fatalf("row %d has sequence %d", i, r.Message.Sequence)
		}
	}
	// What was already on its way could be read from a dead connection
	// too: the stream must still carry what commits now.
	after := msg(t, "a", txs*per+1)
	if err := appendFunc(s)(t.Context(), []outbox.Message{after}, false); err != nil {
		t.Fatal(err)
	}
	if last := drain(t, cur, 1, 10*time.Second); len(last) != 1 || last[0].Message.ID != after.ID {
		t.Fatalf("after the pause the stream carried %d new rows, want the one just committed", len(last))
	}
}

// One transaction of 50,000 rows of ~500 bytes, and a relay that is not
// reading: the cursor holds a few chunks of it, not the transaction.
func TestCDCHoldsABoundedPartOfALargeTransaction(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	src := cdc(t, s, postgres.CDCConfig{})
	if _, err := src.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	const rows = 50000
	if _, err := s.Pool().Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, sequence, payload, timestamp)
		SELECT gen_random_uuid(), 'order', 'big', 'Changed', g, jsonb_build_object('pad', repeat('x', 500)), now()
		FROM generate_series(1, $1) g`, rows); err != nil {
		t.Fatal(err)
	}
	var end string
	if err := s.Pool().QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&end); err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	cur, err := src.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	// Give the stream time to take all it will: a cursor that buffers the
	// whole transaction has it all within this; a bounded one stops
	// reading and the server's sent position stays behind.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var sent bool
		s.Pool().QueryRow(ctx, `SELECT coalesce(bool_or(sent_lsn >= $1::pg_lsn), false) FROM pg_stat_replication`, end).Scan(&sent)
		if sent {
			break
		}
		<-time.After(50 * time.Millisecond)
	}
	<-time.After(500 * time.Millisecond)
	grown := int64(heap()) - int64(before)
	t.Logf("heap grew %d KB while the relay did not read a %d-row transaction", grown/1024, rows)
	if grown > 8<<20 {
		t.Fatalf("heap grew %d MB: the cursor buffers the transaction", grown>>20)
	}
	got := drain(t, cur, rows, 60*time.Second)
	if len(got) != rows {
		t.Fatalf("read %d rows, want %d", len(got), rows)
	}
	for i, r := range got {
		if r.Message.Sequence != int64(i+1) {
			t.Fatalf("row %d has sequence %d", i, r.Message.Sequence)
		}
		if i < rows-1 && r.Position == got[rows-1].Position {
			t.Fatalf("row %d carries the transaction's end: a checkpoint there would confirm a partly acknowledged transaction", i)
		}
	}
}

// The relay acknowledged a transaction and wrote its checkpoint, then
// died before telling the server (or the server crashed before persisting
// the slot's position): the next start resumes from the relay's own
// checkpoint, not from the slot's stale position, so what the broker
// already acknowledged is not published again.
func TestCDCResumesFromTheRelaysOwnCheckpoint(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	src := cdc(t, s, postgres.CDCConfig{})
	if _, err := src.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	a, b := msg(t, "a", 1), msg(t, "a", 2)
	appendFunc(s)(ctx, []outbox.Message{a}, false)
	appendFunc(s)(ctx, []outbox.Message{b}, false)
	// A second source on the same slot that never sends a status update.
	mute, err := s.CDC(postgres.CDCConfig{Slot: src.CheckpointName()[len("cdc:"):], StatusInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := mute.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := drain(t, cur, 2, 10*time.Second)
	if len(got) != 2 {
		t.Fatalf("read %d, want 2", len(got))
	}
	if err := cur.Commit(ctx, got[0].Position); err != nil { // checkpoint written, slot not told
		t.Fatal(err)
	}
	// The process dies: its session ends without a last status update.
	if _, err := s.Pool().Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1`,
		src.CheckpointName()[len("cdc:"):]); err != nil {
		t.Fatal(err)
	}
	cur.Close()
	var confirmed string
	s.Pool().QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, src.CheckpointName()[len("cdc:"):]).Scan(&confirmed)
	if confirmed == string(got[0].Position) {
		t.Fatalf("the slot was told %s; the test needs it behind", confirmed)
	}
	var again []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, err = src.Open(ctx)
		if err == nil || time.Now().After(deadline) {
			break
		}
		<-time.After(100 * time.Millisecond) // the killed session still holds the slot for a moment
	}
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for rctx.Err() == nil {
		recs, err := cur.Next(rctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			again = append(again, r.Message.ID.String())
		}
	}
	if len(again) != 1 || again[0] != b.ID.String() {
		t.Fatalf("after the crash read %v, want only the unacknowledged %s", again, b.ID)
	}
}

// cutter forwards TCP connections to a server and can cut them all at
// once, as a server killed outright does: no message, the stream ends.
// Connections made after the cut are held, unanswered, on held.
type cutter struct {
	ln    net.Listener
	held  chan net.Conn
	mu    sync.Mutex
	isCut bool
	conns []net.Conn
}

func newCutter(t *testing.T, upstream string) *cutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln, held: make(chan net.Conn, 16)}
	t.Cleanup(func() { ln.Close(); c.cut() })
	go func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			isCut := c.isCut
			c.mu.Unlock()
			if isCut {
				c.held <- down
				continue
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				down.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, down, up)
			c.mu.Unlock()
			go func() { io.Copy(up, down); up.Close() }()
			go func() { io.Copy(down, up); down.Close() }()
		}
	}()
	return c
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.isCut = true
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// The connection under the stream ends without a word (the server killed
// outright, a network cut): the cursor reports it, and closing it then
// touches nothing the driver's own close of the broken connection is
// still using. A last status update sent on it raced that close (seen by
// the race detector in CI: the driver's close sends its goodbye from a
// goroutine of its own, after a cancel request to the server).
func TestCDCCloseAfterTheConnectionWasCut(t *testing.T) {
	_, dsn := newDB(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cut := newCutter(t, u.Host)
	u.Host = cut.ln.Addr().String()
	ctx := t.Context()
	s, err := postgres.Open(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	src := cdc(t, s, postgres.CDCConfig{})
	if _, err := src.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	cur, err := src.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cut.cut()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := cur.Next(ctx, 10); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cursor did not report the cut stream in 10 s")
		}
	}
	// The driver's close waits on its cancel request; let it go on, and
	// give it the moment it needs to send its goodbye, before closing.
	select {
	case held := <-cut.held:
		held.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("no cancel request in 10 s")
	}
	<-time.After(100 * time.Millisecond)
	if err := cur.Close(); err != nil {
		t.Fatal(err)
	}
}

// Close ends a receive that waits on a quiet stream at once, not when the
// next status update falls due: the stream's reads end with the cursor's
// context, not only at their deadline.
func TestCDCCloseEndsAWaitingReceive(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	src := cdc(t, s, postgres.CDCConfig{})
	if _, err := src.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	quiet, err := s.CDC(postgres.CDCConfig{Slot: src.CheckpointName()[len("cdc:"):], StatusInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := quiet.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if recs, err := cur.Next(ctx, 10); err != nil || len(recs) != 0 { // waits out Next's idle time on an empty stream
		t.Fatalf("Next on a quiet stream: %d records, %v", len(recs), err)
	}
	closed := make(chan struct{})
	go func() { cur.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close still waits on the stream's receive after 5 s (its status interval is an hour)")
	}
}

// Transactions that arrived while the relay was busy go to it in one read:
// under load each transaction is a chunk of its own, and a read each would
// be a publish each.
func TestCDCHandsOverEveryWaitingTransactionInOneRead(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	src := cdc(t, s, postgres.CDCConfig{})
	if _, err := src.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	cur, err := src.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	const txs = 3
	for i := range txs {
		if err := appendFunc(s)(ctx, []outbox.Message{msg(t, "a", int64(i+1))}, false); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for postgres.QueuedChunks(cur) < txs {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d transactions reached the cursor", postgres.QueuedChunks(cur), txs)
		}
		<-time.After(10 * time.Millisecond)
	}
	recs, err := cur.Next(ctx, 100)
	if err != nil || len(recs) != txs {
		t.Fatalf("one read gave %d records (%v), want the %d waiting", len(recs), err, txs)
	}
	for i, r := range recs {
		if r.Message.Sequence != int64(i+1) {
			t.Fatalf("record %d has sequence %d: out of order", i, r.Message.Sequence)
		}
	}
}
