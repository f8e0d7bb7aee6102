package postgres

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// RelayLock is the lock that makes one polling relay at a time read this
// database's outbox (poll.Lock): a session advisory lock, held on a
// connection of its own. PostgreSQL releases it when that session ends,
// so a standby takes over as soon as the server notices the active relay
// is gone (at once for a process killed on the same network, within TCP
// keepalive for a host that vanished). The CDC source needs no lock: its
// replication slot admits one reader.
//
// The session is checked every CheckEvery. An answer that the session is
// gone (the server ended it) counts at once; silence counts only after
// five times CheckEvery, so a busy server is not taken for a lost session
// (which would restart the relay and republish its window). A relay cut
// off from the server stops reading and checkpointing within that time:
// how long it may overlap a new active relay.
func (s *Store) RelayLock(name string) *AdvisoryLock {
	return &AdvisoryLock{dsn: s.dsn, key: "outbox relay: " + name, CheckEvery: time.Second}
}

// AdvisoryLock is a session advisory lock on a dedicated connection.
type AdvisoryLock struct {
	dsn        string
	key        string
	CheckEvery time.Duration

	mu   sync.Mutex
	conn *pgx.Conn
	stop chan struct{}
	done chan struct{}
}

// TryLock implements poll.Lock.
func (l *AdvisoryLock) TryLock(ctx context.Context) (<-chan struct{}, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		return nil, false, fmt.Errorf("postgres: relay lock %q is already held by this process", l.key)
	}
	conn, err := pgx.Connect(ctx, l.dsn)
	if err != nil {
		return nil, false, fmt.Errorf("postgres: relay lock: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, l.key).Scan(&ok); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, false, fmt.Errorf("postgres: relay lock: %w", err)
	}
	if !ok {
		conn.Close(context.WithoutCancel(ctx))
		return nil, false, nil
	}
	l.conn, l.stop = conn, make(chan struct{})
	lost := make(chan struct{})
	l.done = make(chan struct{})
	go l.watch(conn, l.stop, lost, l.done)
	return lost, true, nil
}

// watch pings the lock's session until Unlock; a failed ping means the
// session, and so the lock, may be gone.
func (l *AdvisoryLock) watch(conn *pgx.Conn, stop, lost, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(l.CheckEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*l.CheckEvery)
		err := conn.Ping(ctx)
		cancel()
		if err != nil {
			close(lost)
			return
		}
	}
}

// Unlock implements poll.Lock: it ends the lock's session.
func (l *AdvisoryLock) Unlock() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return nil
	}
	close(l.stop)
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := l.conn.Close(ctx)
	l.conn = nil
	return err
}
