// Package sqlite is the embedded default store: modernc.org/sqlite (pure
// Go) in WAL mode. Domain rows and outbox rows share the caller's
// transaction; the relay polls the outbox by position.
//
// Polling by position is safe here, unlike on PostgreSQL: SQLite has one
// writer at a time, so positions become visible in the order they were
// assigned and no row can commit behind a position already read.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/outbox-dev/outbox/internal/appendsql"
	"github.com/outbox-dev/outbox/outbox"
)

// orderMigrations are the order service's tables; the outbox's are in
// package migrations (see migrate.go).
//
//go:embed migrations/*.sql
var orderMigrations embed.FS

// Config tunes the database. The zero value is durable: synchronous=FULL.
type Config struct {
	// Synchronous is SQLite's PRAGMA synchronous: FULL (default) survives
	// power loss; NORMAL only survives a process crash, in WAL mode.
	Synchronous string
	// BusyTimeout is how long a writer waits for the lock (default 5 s):
	// for the store's write turn, then for SQLite's lock.
	BusyTimeout time.Duration
}

// Store is safe for concurrent use.
type Store struct {
	path  string
	db    *sql.DB
	wake  chan struct{}
	once  sync.Once
	close error

	// writing is the write turn of the store's own writers: they queue
	// here, in order, instead of in SQLite's busy handler, which retries
	// every 100 ms once a wait passes 228 ms, so that under many writers
	// one could lose every retry until its busy timeout ran out. Writers
	// outside the store (another process, a transaction on DB()) still
	// meet them in the busy handler.
	writing     chan struct{}
	busyTimeout time.Duration

	// The watch for commits by other connections (see Wake).
	watchOnce sync.Once
	stopWatch context.CancelFunc
	watching  chan struct{}

	// The hot statements, prepared once: parsing them on every call
	// cost more than running them (see the benchmark notes).
	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt
}

const fetchSQL = `SELECT position, id, aggregatetype, aggregateid, type, sequence, payload, headers, timestamp
		FROM outbox WHERE position > ? ORDER BY position LIMIT ?`

// stmt returns query prepared, preparing it on first use (after the
// migrations created its tables).
func (s *Store) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if st := s.stmts[query]; st != nil {
		return st, nil
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if s.stmts == nil {
		s.stmts = map[string]*sql.Stmt{}
	}
	s.stmts[query] = st
	return st, nil
}

// execTx runs a prepared statement inside tx.
func (s *Store) execTx(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	st, err := s.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return tx.StmtContext(ctx, st).ExecContext(ctx, args...)
}

// Open opens (creating if needed) the database at path. ":memory:" is not
// supported: the relay and writers need one shared database.
func Open(ctx context.Context, path string, cfg Config) (*Store, error) {
	if path == "" || path == ":memory:" {
		return nil, fmt.Errorf("sqlite: a file path is required, got %q", path)
	}
	// SQLite says only "unable to open database file (14)" for these.
	if dir := filepath.Dir(path); dir != "" {
		if fi, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("sqlite: cannot create %s: the directory %s does not exist (create it first)", path, dir)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("sqlite: cannot create %s: %s is not a directory", path, dir)
		}
	}
	if cfg.Synchronous == "" {
		cfg.Synchronous = "FULL"
	}
	switch strings.ToUpper(cfg.Synchronous) {
	case "OFF", "NORMAL", "FULL", "EXTRA":
	default:
		return nil, fmt.Errorf("sqlite: Synchronous must be OFF, NORMAL, FULL or EXTRA, got %q", cfg.Synchronous)
	}
	if cfg.BusyTimeout < 0 {
		return nil, fmt.Errorf("sqlite: BusyTimeout must not be negative, got %s", cfg.BusyTimeout)
	}
	if cfg.BusyTimeout == 0 {
		cfg.BusyTimeout = 5 * time.Second
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous("+strings.ToUpper(cfg.Synchronous)+")")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", cfg.BusyTimeout.Milliseconds()))
	q.Add("_pragma", "foreign_keys(ON)")
	// Take the write lock at BEGIN: a deferred transaction that reads then
	// writes can fail with SQLITE_BUSY instead of waiting.
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return &Store{path: path, db: db, wake: make(chan struct{}, 1), writing: make(chan struct{}, 1), busyTimeout: cfg.BusyTimeout}, nil
}

// DB exposes the handle for domain tables that share the database.
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the database; it is safe to call more than once.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.watchOnce.Do(func() {}) // no watch starts after Close
		if s.stopWatch != nil {
			s.stopWatch()
			<-s.watching
		}
		s.stmtMu.Lock()
		for _, st := range s.stmts {
			st.Close()
		}
		s.stmtMu.Unlock()
		s.close = s.db.Close()
	})
	return s.close
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// turn waits for the store's write turn (see writing), up to the busy
// timeout, as SQLite's own lock would; release gives it to the next
// writer. A write by fn inside Transact waits on the turn Transact holds:
// it fails after the busy timeout, as it did on SQLite's lock.
func (s *Store) turn(ctx context.Context) (release func(), err error) {
	release = func() { <-s.writing }
	select {
	case s.writing <- struct{}{}:
		return release, nil
	default:
	}
	t := time.NewTimer(s.busyTimeout)
	defer t.Stop()
	select {
	case s.writing <- struct{}{}:
		return release, nil
	case <-t.C:
		return nil, fmt.Errorf("%w: waited %s for the store's write turn", ErrBusy, s.busyTimeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ErrBusy is returned by a write that waited its busy timeout for another
// writer of the same store.
var ErrBusy = errors.New("sqlite: database is busy")

// exec runs one write statement in its turn.
func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	release, err := s.turn(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	return s.db.ExecContext(ctx, query, args...)
}

// transact runs fn in a write transaction, in its turn.
func (s *Store) transact(ctx context.Context, fn func(*sql.Tx) error) (err error) {
	release, err := s.turn(ctx)
	if err != nil {
		return err
	}
	defer release()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// Transact runs fn in a transaction, commits it when fn returns nil, and
// then wakes the polling source so the relay reads at once.
func (s *Store) Transact(ctx context.Context, fn func(*sql.Tx) error) error {
	if err := s.transact(ctx, fn); err != nil {
		return err
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// Wake is signalled after each Transact commit and, within
// CommitWatchInterval, after a commit by any other connection: a service's
// own transaction with sqloutbox.AppendSQLite, or another process. The
// first call starts that watch; Close ends it.
func (s *Store) Wake() <-chan struct{} {
	s.watchOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopWatch, s.watching = cancel, make(chan struct{})
		go s.watchCommits(ctx)
	})
	return s.wake
}

// CommitWatchInterval is how often Wake's watch looks for a commit by
// another connection: the polling source's latency for those commits, at
// the cost of one stat of the write-ahead log each time.
const CommitWatchInterval = 10 * time.Millisecond

// watchCommits signals wake whenever the write-ahead log changes, and once
// more a tick later: in WAL mode a commit appends its pages to it. (PRAGMA data_version says the
// same, but takes a read lock each time, for about twice the CPU.) A change
// that is not a new outbox row costs one empty fetch. An idle relay spends
// about 5 ms of CPU a second on the watch (0.1 s in 20 s without it, 0.2 s
// with it, `outbox relay` on SQLite, measured from /proc/PID/stat).
func (s *Store) watchCommits(ctx context.Context) {
	defer close(s.watching)
	wal := s.path + "-wal"
	stamp := func() (time.Time, int64) {
		fi, err := os.Stat(wal)
		if err != nil {
			return time.Time{}, -1
		}
		return fi.ModTime(), fi.Size()
	}
	lastMod, lastSize := stamp()
	t := time.NewTicker(CommitWatchInterval)
	defer t.Stop()
	again := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		mod, size := stamp()
		changed := !mod.Equal(lastMod) || size != lastSize
		if !changed && !again {
			continue
		}
		// A commit writes its frames, syncs, and only then is visible: a
		// wake between the two finds nothing, so wake once more on the
		// next tick.
		again = changed
		lastMod, lastSize = mod, size
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// Append inserts messages into the outbox inside the caller's
// transaction, as sqloutbox.AppendSQLite does (the same statement,
// prepared once here).
func (s *Store) Append(ctx context.Context, tx *sql.Tx, msgs ...outbox.Message) error {
	for _, m := range msgs {
		m, headers, err := appendsql.Prepare(ctx, m)
		if err != nil {
			return err
		}
		if _, err := s.execTx(ctx, tx, appendsql.SQLite, appendsql.SQLiteArgs(m, headers)...); err != nil {
			return fmt.Errorf("sqlite: append outbox message %s: %w", m.ID, err)
		}
	}
	return nil
}

// Fetch implements poll.Fetcher.
func (s *Store) Fetch(ctx context.Context, after outbox.Position, max int) ([]outbox.Record, error) {
	from, err := parsePosition(after)
	if err != nil {
		return nil, err
	}
	stmt, err := s.stmt(ctx, fetchSQL)
	if err != nil {
		return nil, fmt.Errorf("sqlite: fetch after %d: %w", from, err)
	}
	rows, err := stmt.QueryContext(ctx, from, max)
	if err != nil {
		return nil, fmt.Errorf("sqlite: fetch after %d: %w", from, err)
	}
	defer rows.Close()
	var out []outbox.Record
	for rows.Next() {
		var pos int64
		var m outbox.Message
		var id, payload, headers string
		var ts int64
		if err := rows.Scan(&pos, &id, &m.AggregateType, &m.AggregateID, &m.Type, &m.Sequence, &payload, &headers, &ts); err != nil {
			return nil, fmt.Errorf("sqlite: fetch: %w", err)
		}
		if err := fillMessage(&m, id, payload, headers, ts); err != nil {
			return nil, fmt.Errorf("sqlite: fetch position %d: %w", pos, err)
		}
		out = append(out, outbox.Record{Message: m, Position: outbox.Position(strconv.FormatInt(pos, 10))})
	}
	return out, rows.Err()
}

func parsePosition(p outbox.Position) (int64, error) {
	if p == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(string(p), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("sqlite: bad position %q", p)
	}
	return n, nil
}

// LoadCheckpoint implements poll.Fetcher.
func (s *Store) LoadCheckpoint(ctx context.Context, name string) (outbox.Position, error) {
	var pos string
	err := s.db.QueryRowContext(ctx, `SELECT position FROM outbox_checkpoints WHERE name = ?`, name).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("sqlite: load checkpoint %q: %w", name, err)
	}
	return outbox.Position(pos), nil
}

// SaveCheckpoint implements poll.Fetcher.
func (s *Store) SaveCheckpoint(ctx context.Context, name string, pos outbox.Position) error {
	if _, err := parsePosition(pos); err != nil {
		return err
	}
	_, err := s.exec(ctx, `INSERT INTO outbox_checkpoints (name, position, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at`,
		name, string(pos), time.Now().UnixMicro())
	if err != nil {
		return fmt.Errorf("sqlite: save checkpoint %q at %s: %w", name, pos, err)
	}
	return nil
}

// Backlog counts outbox rows after the named checkpoint.
func (s *Store) Backlog(ctx context.Context, name string) (int64, error) {
	pos, err := s.LoadCheckpoint(ctx, name)
	if err != nil {
		return 0, err
	}
	from, err := parsePosition(pos)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM outbox WHERE position > ?`, from).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: backlog: %w", err)
	}
	return n, nil
}
