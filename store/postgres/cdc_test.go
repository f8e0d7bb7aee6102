package postgres_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/url"
	"runtime"
	"strings"
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

// faultyLink forwards TCP connections to a PostgreSQL server, message by
// message from the server, until break: then each client gets a malformed
// message, as from a broken server, on a connection that stays open, and
// what each client sends afterwards is kept, not forwarded. Connections
// made after the break (the driver's cancel request) are held, unanswered,
// on held.
type faultyLink struct {
	ln       net.Listener
	upstream string
	held     chan net.Conn

	mu     sync.Mutex
	broken bool
	links  []*link
}

type link struct {
	down, up net.Conn
	after    bytes.Buffer  // what the client sent after the break (guarded by faultyLink.mu)
	ended    chan struct{} // the client closed its side
}

func newFaultyLink(t *testing.T, upstream string) *faultyLink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &faultyLink{ln: ln, upstream: upstream, held: make(chan net.Conn, 16)}
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, l := range f.links {
			l.down.Close()
			l.up.Close()
		}
		for {
			select {
			case c := <-f.held:
				c.Close()
			default:
				return
			}
		}
	})
	go f.accept()
	return f
}

func (f *faultyLink) accept() {
	for {
		down, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		broken := f.broken
		f.mu.Unlock()
		if broken {
			select {
			case f.held <- down:
			default:
				down.Close()
			}
			continue
		}
		up, err := net.Dial("tcp", f.upstream)
		if err != nil {
			down.Close()
			continue
		}
		l := &link{down: down, up: up, ended: make(chan struct{})}
		f.mu.Lock()
		f.links = append(f.links, l)
		f.mu.Unlock()
		go f.fromClient(l)
		go f.fromServer(l)
	}
}

func (f *faultyLink) fromClient(l *link) {
	defer close(l.ended)
	buf := make([]byte, 64<<10)
	for {
		n, err := l.down.Read(buf)
		if n > 0 {
			f.mu.Lock()
			if f.broken {
				l.after.Write(buf[:n])
			} else {
				l.up.Write(buf[:n])
			}
			f.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// fromServer copies whole messages (a type byte, a length that counts
// itself, the body), so that break's message starts where one ends.
func (f *faultyLink) fromServer(l *link) {
	for {
		head := make([]byte, 5)
		if _, err := io.ReadFull(l.up, head); err != nil {
			return
		}
		body := make([]byte, max(int(binary.BigEndian.Uint32(head[1:]))-4, 0))
		if _, err := io.ReadFull(l.up, body); err != nil {
			return
		}
		f.mu.Lock()
		if f.broken {
			f.mu.Unlock()
			return
		}
		l.down.Write(append(head, body...))
		f.mu.Unlock()
	}
}

func (f *faultyLink) breakAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broken = true
	for _, l := range f.links {
		l.down.Write([]byte{'d', 0, 0, 0, 2}) // a length shorter than itself
		l.up.Close()
	}
}

// sentAfter returns what each client sent after the break.
func (f *faultyLink) sentAfter() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out [][]byte
	for _, l := range f.links {
		out = append(out, bytes.Clone(l.after.Bytes()))
	}
	return out
}

var terminate = []byte{'X', 0, 0, 0, 4}

// The stream breaks (a malformed message from a failing server or proxy):
// the driver closes the connection on its own goroutine, which sends its
// Terminate after a cancel request. The cursor reports the error, and its
// Close then writes nothing more on the connection: a last status update
// there went out after the driver's Terminate, and raced the driver's
// writes (the race detector saw it in CI, after a hard stop of the server).
func TestCDCCloseAfterTheStreamBroke(t *testing.T) {
	_, dsn := newDB(t)
	// The link frames every byte from the server as a message: no TLS
	// negotiation, whose answer is one byte.
	u, err := url.Parse(withParam(t, withParam(t, dsn, "sslmode", "disable"), "connect_timeout", "10"))
	if err != nil {
		t.Fatal(err)
	}
	fl := newFaultyLink(t, net.JoinHostPort(u.Hostname(), cmp.Or(u.Port(), "5432")))
	u.Host = fl.ln.Addr().String()
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
	fl.breakAll()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := cur.Next(ctx, 10)
		if err != nil {
			if !strings.Contains(err.Error(), "invalid message length") {
				t.Fatalf("the cursor failed with %v, want the malformed message", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cursor did not report the broken stream in 10 s")
		}
	}
	// The driver's close waits on its cancel request: let it go on, and
	// wait for its Terminate.
	select {
	case held := <-fl.held:
		// A CancelRequest: its length (16), then 80877102.
		req := make([]byte, 8)
		held.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(held, req); err != nil || binary.BigEndian.Uint32(req[4:]) != 80877102 {
			t.Fatalf("the connection made after the break sent %x (%v), want a cancel request", req, err)
		}
		held.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("no cancel request in 10 s")
	}
	var stream int
	for stream = -1; stream < 0; {
		for i, sent := range fl.sentAfter() {
			if bytes.Contains(sent, terminate) {
				stream = i
			}
		}
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatal("the driver sent no Terminate")
		}
		<-time.After(10 * time.Millisecond)
	}
	cur.Close()
	// The driver reads until its peer closes; then it closes, and every
	// byte the cursor wrote has reached the link.
	fl.mu.Lock()
	l := fl.links[stream]
	fl.mu.Unlock()
	l.down.(*net.TCPConn).CloseWrite()
	select {
	case <-l.ended:
	case <-time.After(20 * time.Second):
		t.Fatal("the driver did not close the connection")
	}
	sent := fl.sentAfter()[stream]
	if rest := sent[bytes.Index(sent, terminate)+len(terminate):]; len(rest) > 0 {
		t.Fatalf("after the driver's Terminate the cursor wrote %q on the connection", rest)
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

// Transactions that arrived while the relay was busy go to it in one read,
// however many (up to the cursor's bound of 1,024 records): under load each
// transaction is a chunk of its own, and a read each would be a publish
// each.
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
	const txs = 40
	for i := range txs {
		if err := appendFunc(s)(ctx, []outbox.Message{msg(t, "a", int64(i+1))}, false); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for postgres.HandedRecords(cur) < txs {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d transactions reached the cursor", postgres.HandedRecords(cur), txs)
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
