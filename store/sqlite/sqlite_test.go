package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/sqloutbox"
	"github.com/outbox-dev/outbox/store/poll"
	"github.com/outbox-dev/outbox/store/sqlite"
	"github.com/outbox-dev/outbox/store/storetest"
)

// open returns a migrated store in a temporary directory with a domain
// table beside the outbox, as an application would have.
func open(t testing.TB) *sqlite.Store {
	t.Helper()
	ctx := context.Background()
	s := openAt(t, filepath.Join(t.TempDir(), "outbox.db"))
	if _, err := s.DB().ExecContext(ctx, `CREATE TABLE domain_rows (id TEXT PRIMARY KEY, version INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return s
}

// openAt returns a migrated store at path.
func openAt(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, sqlite.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Features{ConcurrentWriters: true, UniqueEventIDs: true}, func(t *testing.T) storetest.Harness {
		s := open(t)
		src, err := poll.NewSource(s, poll.Config{Interval: time.Millisecond, Wake: s.Wake()})
		if err != nil {
			t.Fatal(err)
		}
		return storetest.Harness{
			Store:  s,
			Source: src,
			Append: func(ctx context.Context, msgs []outbox.Message, fail bool) error {
				return s.Transact(ctx, func(tx *sql.Tx) error {
					for _, m := range msgs {
						if _, err := tx.ExecContext(ctx, `INSERT INTO domain_rows (id, version) VALUES (?, ?)
							ON CONFLICT (id) DO UPDATE SET version = excluded.version`, m.AggregateID, m.Sequence); err != nil {
							return err
						}
					}
					if err := s.Append(ctx, tx, msgs...); err != nil {
						return err
					}
					if fail {
						return errors.New("rolled back on purpose")
					}
					return nil
				})
			},
		}
	})
}

func TestMigrateIsIdempotent(t *testing.T) {
	s := open(t)
	n, err := s.Migrate(context.Background())
	if err != nil || n != 0 {
		t.Fatalf("second migrate applied %d (err %v), want 0", n, err)
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		path string
		opts sqlite.Config
	}{
		{"memory", ":memory:", sqlite.Config{}},
		{"empty path", "", sqlite.Config{}},
		{"bad synchronous", filepath.Join(t.TempDir(), "x.db"), sqlite.Config{Synchronous: "SOMETIMES"}},
		{"negative busy timeout", filepath.Join(t.TempDir(), "x.db"), sqlite.Config{BusyTimeout: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := sqlite.Open(context.Background(), tc.path, tc.opts); err == nil {
				t.Fatal("Open accepted invalid options")
			}
		})
	}
}

// A database in a directory that does not exist is refused with a message
// naming the directory, not SQLite's "unable to open database file (14)".
func TestOpenNamesAMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "no", "such")
	_, err := sqlite.Open(context.Background(), filepath.Join(dir, "o.db"), sqlite.Config{})
	if err == nil || !strings.Contains(err.Error(), "the directory "+dir+" does not exist") || strings.Contains(err.Error(), "(14)") {
		t.Fatalf("Open in a missing directory: %v", err)
	}
}

// A commit the store did not make (a service's own transaction with
// sqloutbox.AppendSQLite, here on a handle of its own) wakes the polling
// source too, so the relay does not wait out its poll interval.
func TestWakeHearsACommitByAnotherConnection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	wake := openAt(t, path).Wake()
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	// The watch starts in the background: commit until one is heard.
	for i := range 100 {
		m, err := outbox.NewMessage("order", "o1", "Created", int64(i+1), map[string]int{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		tx, err := other.BeginTx(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := sqloutbox.AppendSQLite(t.Context(), tx, m); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-wake:
			return
		case <-time.After(20 * sqlite.CommitWatchInterval):
		}
	}
	t.Fatal("100 commits by another connection, none woke the source")
}

// The store's writers take turns in the process instead of in SQLite's
// busy handler, which retries every 100 ms once a wait passes 228 ms: under
// many writers one of them could lose every retry until its busy timeout
// (order writes failed with SQLITE_BUSY in the bench's keep-up stage).
// Here 16 writers and a checkpoint writer commit as fast as they can with
// a busy timeout of 250 ms; none may see SQLITE_BUSY.
func TestManyWritersTakeTurnsWithoutBusyErrors(t *testing.T) {
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "outbox.db"), sqlite.Config{BusyTimeout: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 150
	errs := make(chan error, writers+1)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				m, err := outbox.NewMessage("order", fmt.Sprintf("w%d", w), "Changed", int64(i+1), map[string]int{"i": i})
				if err != nil {
					errs <- err
					return
				}
				if err := s.Transact(t.Context(), func(tx *sql.Tx) error { return s.Append(t.Context(), tx, m) }); err != nil {
					errs <- fmt.Errorf("writer %d, commit %d: %w", w, i, err)
					return
				}
			}
		})
	}
	stop := make(chan struct{})
	checkpoints := make(chan struct{})
	go func() {
		defer close(checkpoints)
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.SaveCheckpoint(t.Context(), "default", outbox.Position(fmt.Sprint(i))); err != nil {
				errs <- fmt.Errorf("checkpoint %d: %w", i, err)
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-checkpoints
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A write through the store from inside its own Transact waits for the
// turn Transact holds: it fails after the busy timeout, as it did on
// SQLite's lock, and the store's other writers go on afterwards.
func TestAWriteInsideTransactFailsAfterTheBusyTimeout(t *testing.T) {
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "outbox.db"), sqlite.Config{BusyTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- s.Transact(t.Context(), func(*sql.Tx) error { return s.SaveCheckpoint(t.Context(), "default", "1") })
	}()
	select {
	case err := <-done:
		if !errors.Is(err, sqlite.ErrBusy) {
			t.Fatalf("Transact(SaveCheckpoint) = %v, want ErrBusy", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write inside Transact still waits after 10 s")
	}
	if err := s.SaveCheckpoint(t.Context(), "default", "2"); err != nil {
		t.Fatalf("the next write: %v", err)
	}
}
