package scylla

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	scyllacdc "github.com/scylladb/scylla-cdc-go"

	"github.com/outbox-dev/outbox/relay"
)

// CDCConfig tunes the reader. Zero values take the safe defaults below;
// LowLatency() returns the documented low-latency profile.
type CDCConfig struct {
	// ConfidenceWindow: a change is read only once it is this old, so a
	// write delayed inside the cluster is not skipped (default 10 s; the
	// library's own default is 30 s). It bounds latency from below.
	ConfidenceWindow time.Duration
	// QueryWindow is the width of each read (default 10 s).
	QueryWindow time.Duration
	// PostEmptyQueryDelay and PostNonEmptyQueryDelay pace the polling of
	// the CDC log (defaults 1 s and 100 ms).
	PostEmptyQueryDelay    time.Duration
	PostNonEmptyQueryDelay time.Duration
	// LeaseTTL: a standby takes over this long after the holder stopped
	// renewing (default 30 s; renewed every third of it).
	LeaseTTL time.Duration
	// LogTTL is the CDC log's time to live (the table's cdc 'ttl',
	// default 24 h): a change not read within it is deleted unread, so
	// lag is alerted on as it approaches it.
	LogTTL time.Duration
	// Owner names this relay in the lease (default hostname:pid).
	Owner  string
	Logger *slog.Logger
}

// LowLatency trades safety margin for latency: a 2 s confidence window
// assumes cluster clocks within ~1 s and writes that finish within the
// write timeout; a write delayed beyond the window can be missed.
func LowLatency() CDCConfig {
	return CDCConfig{ConfidenceWindow: 2 * time.Second, QueryWindow: 2 * time.Second,
		PostEmptyQueryDelay: 200 * time.Millisecond, PostNonEmptyQueryDelay: 20 * time.Millisecond}
}

func (c *CDCConfig) setDefaults() {
	if c.ConfidenceWindow <= 0 {
		c.ConfidenceWindow = 10 * time.Second
	}
	if c.QueryWindow <= 0 {
		c.QueryWindow = 10 * time.Second
	}
	if c.PostEmptyQueryDelay <= 0 {
		c.PostEmptyQueryDelay = time.Second
	}
	if c.PostNonEmptyQueryDelay <= 0 {
		c.PostNonEmptyQueryDelay = 100 * time.Millisecond
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 30 * time.Second
	}
	if c.LogTTL <= 0 {
		c.LogTTL = DefaultCDCTTL
	}
	if c.Owner == "" {
		host, _ := os.Hostname()
		c.Owner = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Source is the relay source over the outbox table's CDC log.
type Source struct {
	s       *Store
	cfg     CDCConfig
	current atomic.Pointer[tracker]
	now     func() time.Time
}

var _ relay.Source = (*Source)(nil)

// CDC builds the source.
func (s *Store) CDC(cfg CDCConfig) *Source {
	cfg.setDefaults()
	return &Source{s: s, cfg: cfg, now: time.Now}
}

// Open takes the table's lease and starts the reader; the cursor fails
// (and the relay restarts) when the lease is lost or the reader stops.
func (src *Source) Open(ctx context.Context) (relay.Cursor, error) {
	table := src.s.keyspace + ".outbox_messages"
	lease := newLease(cqlLease{src.s.session, src.s.keyspace}, table, src.cfg.Owner, src.cfg.LeaseTTL, nil)
	if err := lease.Acquire(ctx); err != nil {
		return nil, err
	}
	tr := newTracker(1024, src.cfg.Logger)
	src.current.Store(tr)
	reader, err := scyllacdc.NewReader(ctx, &scyllacdc.ReaderConfig{
		Session:               src.s.session,
		TableNames:            []string{table},
		ChangeConsumerFactory: consumerFactory{tr},
		ProgressManager:       &fencedProgress{store: cqlProgress{src.s.session, src.s.keyspace, table}, lease: lease},
		Advanced: scyllacdc.AdvancedReaderConfig{
			ConfidenceWindowSize:   src.cfg.ConfidenceWindow,
			QueryTimeWindowSize:    src.cfg.QueryWindow,
			PostEmptyQueryDelay:    src.cfg.PostEmptyQueryDelay,
			PostNonEmptyQueryDelay: src.cfg.PostNonEmptyQueryDelay,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("scylla: CDC reader: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cur := &cursor{tracker: tr, stop: reader.Stop, cancel: cancel, failed: make(chan error, 1), done: make(chan struct{})}
	go func() {
		defer close(cur.done)
		cur.fail(reader.Run(runCtx))
	}()
	go func() { // renew the lease; losing it stops the reader
		t := time.NewTicker(src.cfg.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				if err := lease.Renew(runCtx); errors.Is(err, ErrLeaseLost) {
					reader.Stop()
					cur.fail(err)
					return
				}
			}
		}
	}()
	return cur, nil
}

// Lag is how long the oldest change read and not yet acknowledged has
// waited since it was written (0 when the relay has caught up), and the
// log's TTL it must stay well below.
func (src *Source) Lag() (lag, ttl time.Duration) {
	if tr := src.current.Load(); tr != nil {
		if oldest := tr.oldestPending(); !oldest.IsZero() {
			lag = max(src.now().Sub(oldest), 0)
		}
	}
	return lag, src.cfg.LogTTL
}

// cursor adds the reader's lifecycle to the tracker.
type cursor struct {
	*tracker
	stop   func()
	cancel context.CancelFunc
	failed chan error
	done   chan struct{}
}

func (c *cursor) fail(err error) {
	if err == nil {
		err = errors.New("scylla: CDC reader stopped")
	}
	select {
	case c.failed <- err:
	default:
	}
}

// Next returns records, or the reader's failure so the relay restarts;
// it returns none after an idle wait, so the relay can look around.
func (c *cursor) Next(ctx context.Context, max int) ([]relay.Record, error) {
	idle := time.NewTimer(250 * time.Millisecond)
	defer idle.Stop()
	select {
	case err := <-c.failed:
		return nil, err
	case <-ctx.Done():
		return nil, nil
	case <-idle.C:
		return nil, nil
	case h := <-c.out:
		return c.take(h, max), nil
	}
}

// Close stops the reader; it is safe to call more than once.
func (c *cursor) Close() error {
	c.tracker.Close() // consumers waiting in End return
	c.stop()
	c.cancel()
	<-c.done
	return nil
}
