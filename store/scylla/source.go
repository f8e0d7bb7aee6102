package scylla

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	scyllacdc "github.com/scylladb/scylla-cdc-go"

	"github.com/outbox-dev/outbox/outbox"
)

// CDCConfig tunes the reader. Zero values take the safe defaults below;
// LowLatency() returns the documented low-latency profile.
type CDCConfig struct {
	// ConfidenceWindow: a change is read only once it is this old, so a
	// write delayed inside the cluster is not skipped (default 10 s; the
	// library's own default is 30 s). It bounds latency from below.
	ConfidenceWindow time.Duration
	// QueryWindow is the widest span of log one read covers (default
	// 1 min). It matters only when the reader is behind: after a restart,
	// on a first start, or in a backlog, each read is followed by a poll
	// delay, so the reader catches up at QueryWindow per delay. Once caught
	// up a read ends at the confidence window whatever this is.
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
	// IdleProgressEvery: a stream with nothing unacknowledged has its
	// progress moved to the end of an empty read at most this often
	// (default 1 min). Without it an idle stream's progress stays at its
	// last event, or at the generation's start, and after a restart the
	// reader re-reads from there, its whole stream group waiting.
	IdleProgressEvery time.Duration
	// ProgressEvery spaces out each stream's progress writes, a
	// lightweight transaction each, while its changes keep being
	// acknowledged (default 1 s; the relay commits every 50 ms). A crash
	// re-reads up to that much, published again as duplicates.
	ProgressEvery time.Duration
	// GenerationPoll is how often the reader looks for a new CDC
	// generation (default 15 s, the library's): events written in a new
	// generation wait up to this long after a topology change.
	GenerationPoll time.Duration
	// From is where the relay's first start on a table begins reading:
	// the zero value means the oldest change the CDC log still holds, or a
	// minute back if that is earlier (writes in flight as it starts). A
	// later point passes over the changes before it, which is logged as
	// an error. Later starts resume from saved progress and ignore it.
	From time.Time
	// Owner names this relay in the lease (default hostname:pid).
	Owner  string
	Logger *slog.Logger
}

// LowLatency trades safety margin for latency: a 2 s confidence window
// assumes cluster clocks within ~1 s and writes that finish within the
// write timeout; a write delayed beyond the window can be missed.
func LowLatency() CDCConfig {
	return CDCConfig{ConfidenceWindow: 2 * time.Second,
		PostEmptyQueryDelay: 200 * time.Millisecond, PostNonEmptyQueryDelay: 20 * time.Millisecond}
}

const defaultConfidenceWindow = 10 * time.Second

func (c *CDCConfig) setDefaults() {
	if c.ConfidenceWindow <= 0 {
		c.ConfidenceWindow = defaultConfidenceWindow
	}
	if c.QueryWindow <= 0 {
		c.QueryWindow = time.Minute
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
	if c.IdleProgressEvery <= 0 {
		c.IdleProgressEvery = time.Minute
	}
	if c.ProgressEvery <= 0 {
		c.ProgressEvery = time.Second
	}
	if c.GenerationPoll <= 0 {
		c.GenerationPoll = 15 * time.Second
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
	// owner is CDCConfig.Owner made unique to this Source: a lease row
	// naming it is this process's own, renewed rather than waited for.
	owner string
	// holdRenewals stops renewing the lease, as a stalled relay would
	// (tests only).
	holdRenewals atomic.Bool
	// oldest and countOlder look at the log and the outbox table on a
	// first start (tests replace them).
	oldest     func(ctx context.Context) (time.Time, error)
	countOlder func(ctx context.Context, before time.Time) (n int64, complete bool, err error)
}

var _ outbox.Source = (*Source)(nil)

// CDC builds the source.
func (s *Store) CDC(cfg CDCConfig) *Source {
	cfg.setDefaults()
	src := &Source{s: s, cfg: cfg, now: time.Now, owner: cfg.Owner + "#" + uuid.NewString()[:8]}
	src.oldest = func(ctx context.Context) (time.Time, error) {
		return oldestChange(ctx, s.session, s.keyspace+".outbox_messages"+cdcLogSuffix)
	}
	src.countOlder = func(ctx context.Context, before time.Time) (int64, bool, error) {
		return countWrittenBefore(ctx, s.session, s.keyspace+".outbox_messages", before, 10*time.Second)
	}
	return src
}

// Open takes the table's lease, waiting as a standby while another relay
// holds it, and starts the reader. The cursor fails (and the relay
// restarts) when the lease is lost or the reader stops.
func (src *Source) Open(ctx context.Context) (outbox.Cursor, error) {
	table := src.table()
	lease := newLease(cqlLease{src.s.session, src.s.keyspace}, table, src.owner, src.cfg.LeaseTTL, nil)
	if err := waitForLease(ctx, lease, src.cfg.Logger); err != nil {
		return nil, err
	}
	progress := cqlProgress{src.s.session, src.s.keyspace, table}
	epoch, err := lease.Epoch()
	if err != nil {
		return nil, err
	}
	if err := src.planStart(ctx, progress, epoch); err != nil {
		return nil, err
	}
	tr := newTracker(1024, src.cfg.Logger)
	tr.idleEvery, tr.progressEvery = src.cfg.IdleProgressEvery, src.cfg.ProgressEvery
	src.current.Store(tr)
	fenced := &fencedProgress{store: progress, lease: lease, loaded: tr.saved, tracker: tr}
	reader, err := scyllacdc.NewReader(ctx, &scyllacdc.ReaderConfig{
		Session:               src.s.session,
		TableNames:            []string{table},
		ChangeConsumerFactory: consumerFactory{tr},
		ProgressManager:       fenced,
		Advanced: scyllacdc.AdvancedReaderConfig{
			ConfidenceWindowSize:     src.cfg.ConfidenceWindow,
			QueryTimeWindowSize:      src.cfg.QueryWindow,
			PostEmptyQueryDelay:      src.cfg.PostEmptyQueryDelay,
			PostNonEmptyQueryDelay:   src.cfg.PostNonEmptyQueryDelay,
			PostGenerationFetchDelay: src.cfg.GenerationPoll,
		},
		Consistency: gocql.LocalQuorum, // what checkConsistency holds writes to
	})
	if err != nil {
		return nil, fmt.Errorf("scylla: CDC reader: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(reader.Stop) } // the library's Stop panics when called twice
	cur := newCursor(tr, lease, stop, cancel)
	fenced.refused = cur.fail
	go func() {
		defer close(cur.done)
		cur.fail(reader.Run(runCtx))
	}()
	go func() { // renew the lease; losing it stops the reader
		t := time.NewTicker(src.cfg.LeaseTTL / 4)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-lease.Lost():
				cur.fail(fmt.Errorf("scylla: lease %s: %w", table, ErrLeaseLost))
				return
			case <-t.C:
				if src.holdRenewals.Load() {
					continue
				}
				err := lease.Renew(runCtx)
				switch {
				case errors.Is(err, ErrLeaseLost):
					cur.fail(err)
					return
				case err != nil && runCtx.Err() == nil:
					src.cfg.Logger.Warn("CDC lease not renewed; trying again", "lease", table, "left", lease.remaining(), "err", err)
				}
			}
		}
	}()
	return cur, nil
}

// planStart decides where the reader starts when this table was never
// read before (no generation saved) and saves it as the library's
// application start time, which the library then reads from instead of
// looking back ChangeAgeLimit, a minute by default, which would pass over
// anything older without a word. The point is the oldest change the log
// still holds (or a minute back, if that is earlier), or CDCConfig.From. Either way it is logged, with what is
// not read: changes before an explicit point, and outbox rows written
// before the start, whose changes the log no longer holds (it expires
// after its TTL). A start with a point saved but no generation (a first
// start interrupted early) keeps that point; later starts resume from
// saved progress.
func (src *Source) planStart(ctx context.Context, progress progressStore, epoch int64) error {
	log := src.cfg.Logger.With("table", src.table())
	gen, err := progress.generation(ctx)
	if err != nil {
		return fmt.Errorf("scylla: read the saved CDC generation: %w", err)
	}
	if !gen.IsZero() {
		log.Info("resuming CDC from the saved progress of each stream", "generation", gen.UTC().Format(time.RFC3339Nano))
		if !src.cfg.From.IsZero() {
			log.Warn("from= is ignored: it applies to a relay's first start on a table only", "from", src.cfg.From.UTC().Format(time.RFC3339Nano))
		}
		return nil
	}
	saved, err := progress.startTime(ctx)
	if err != nil {
		return fmt.Errorf("scylla: read the saved CDC start point: %w", err)
	}
	if !saved.IsZero() {
		log.Info("first start on this table, resumed: reading from the saved start point", "from", saved.UTC().Format(time.RFC3339Nano))
		return nil
	}
	oldest, err := src.oldest(ctx)
	if err != nil {
		return err
	}
	// CQL's timestamp keeps milliseconds: round down, never past a change.
	// Without from=, the start is at least margin back: a write in flight
	// as the relay starts carries the ballot it was sent with, up to
	// EventWriteDeadline ago, and may land after the oldest change seen
	// now with an earlier time (four orders created at once as a relay
	// first started: three of their events lost, read from the first one
	// to land).
	var start time.Time
	margin := max(time.Minute, 2*max(src.s.eventDeadline, src.cfg.ConfidenceWindow))
	inFlight := src.now().Add(-margin)
	switch {
	case !src.cfg.From.IsZero():
		start = src.cfg.From.Truncate(time.Millisecond)
	case oldest.IsZero() || inFlight.Before(oldest):
		start = inFlight.Truncate(time.Millisecond)
	default:
		start = oldest.Truncate(time.Millisecond)
	}
	applied, err := progress.setStartTime(ctx, start, epoch)
	if err != nil {
		return fmt.Errorf("scylla: save the CDC start point: %w", err)
	}
	if !applied {
		return fmt.Errorf("scylla: CDC start point refused for epoch %d: %w", epoch, ErrLeaseLost)
	}
	from := start.UTC().Format(time.RFC3339Nano)
	switch {
	case src.cfg.From.IsZero() && oldest.IsZero():
		log.Warn("first start on this table: the CDC log is empty; reading from a minute back", "from", from)
	case src.cfg.From.IsZero() && start.Before(oldest.Truncate(time.Millisecond)):
		log.Warn("first start on this table: reading its CDC log from before its oldest change, for writes still in flight", "from", from,
			"oldest_change", oldest.UTC().Format(time.RFC3339Nano))
	case src.cfg.From.IsZero():
		log.Warn("first start on this table: reading its CDC log from the oldest change it holds", "from", from)
	case oldest.IsZero() || !oldest.Before(start):
		log.Warn("first start on this table: reading from the configured point, older than the oldest change in the CDC log", "from", from)
	default:
		log.Error("first start on this table: reading from the configured point; changes in the CDC log before it are NOT published",
			"from", from, "oldest_change", oldest.UTC().Format(time.RFC3339Nano))
	}
	n, complete, err := src.countOlder(ctx, start)
	switch {
	case err != nil:
		log.Warn("could not count outbox rows written before the start point", "err", err)
	case n > 0:
		at := "rows"
		if !complete {
			at = "at_least_rows"
		}
		log.Error("outbox rows written before the start point are not in the CDC log (expired, or before from=) and are NOT published; "+
			"check them in the outbox table", at, n, "from", from)
	}
	return nil
}

func (src *Source) table() string { return src.s.keyspace + ".outbox_messages" }

// countWrittenBefore counts rows of table written before t (by their
// write time), scanning the table page by page for at most budget:
// complete is false when it stopped early, so n is a lower bound.
func countWrittenBefore(ctx context.Context, s *gocql.Session, table string, t time.Time, budget time.Duration) (n int64, complete bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	iter := s.Query(`SELECT WRITETIME(payload) FROM ` + table).WithContext(ctx).PageSize(5000).Iter()
	before := t.UnixMicro()
	var wt int64
	for iter.Scan(&wt) {
		if wt < before {
			n++
		}
	}
	if err := iter.Close(); err != nil {
		if ctx.Err() != nil {
			return n, false, nil
		}
		return n, false, fmt.Errorf("scylla: count rows of %s written before %s: %w", table, t.Format(time.RFC3339), err)
	}
	return n, true, nil
}

// cdcLogSuffix names a table's CDC log table in ScyllaDB.
const cdcLogSuffix = "_scylla_cdc_log"

// oldestChange is the time of the oldest change in a CDC log: the first
// row of each stream (partition), whichever generation it belongs to.
func oldestChange(ctx context.Context, s *gocql.Session, logTable string) (time.Time, error) {
	iter := s.Query(`SELECT "cdc$time" FROM ` + logTable + ` PER PARTITION LIMIT 1 BYPASS CACHE`).WithContext(ctx).Iter()
	var oldest time.Time
	var at gocql.UUID
	for iter.Scan(&at) {
		if t := at.Time(); oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	if err := iter.Close(); err != nil {
		return time.Time{}, fmt.Errorf("scylla: find the oldest change in %s: %w", logTable, err)
	}
	return oldest, nil
}

// Undecodable counts CDC log rows the current reader could not decode
// and handed to the relay to dead-letter (each is logged with its stream
// and cdc$time).
func (src *Source) Undecodable() int64 {
	if tr := src.current.Load(); tr != nil {
		return tr.Undecodable()
	}
	return 0
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

// cursor adds the reader's lifecycle and the lease to the tracker.
type cursor struct {
	*tracker
	lease  *Lease
	stop   func()
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	err    error
	failed chan struct{} // closed once err is set
}

func newCursor(tr *tracker, lease *Lease, stop func(), cancel context.CancelFunc) *cursor {
	return &cursor{tracker: tr, lease: lease, stop: stop, cancel: cancel, done: make(chan struct{}), failed: make(chan struct{})}
}

// fail records why the cursor can go no further and stops the reader.
// The most telling error is kept: a fatal one over a lost lease over the
// reader's own end (which losing the lease causes).
func (c *cursor) fail(err error) {
	if err == nil {
		err = errors.New("scylla: CDC reader stopped")
	}
	rank := func(err error) int {
		switch {
		case outbox.IsFatal(err):
			return 2
		case errors.Is(err, ErrLeaseLost):
			return 1
		}
		return 0
	}
	c.mu.Lock()
	first := c.err == nil
	if first || rank(err) > rank(c.err) {
		c.err = err
	}
	c.mu.Unlock()
	if first {
		close(c.failed)
	}
	c.stop()
}

func (c *cursor) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Fence implements outbox.Fencer: the relay asks before each publish
// attempt, so a relay whose lease is lost publishes nothing more, not
// even a retry of the record in hand.
func (c *cursor) Fence() error { return c.fenced() }

var _ outbox.Fencer = (*cursor)(nil)

// fenced checks the lease; once it is lost the cursor fails.
func (c *cursor) fenced() error {
	if _, err := c.lease.Epoch(); err != nil {
		c.fail(err)
		return c.failure()
	}
	return nil
}

// Next returns records, or the reader's failure so the relay restarts;
// it returns none after an idle wait, so the relay can look around. It
// hands out nothing once the lease is lost (checked before and after
// waiting, and while waiting): rows already read stay unacknowledged for
// the next owner, and the relay, hearing the error, starts no further
// publish.
func (c *cursor) Next(ctx context.Context, max int) ([]outbox.Record, error) {
	if err := c.fenced(); err != nil {
		return nil, err
	}
	idle := time.NewTimer(250 * time.Millisecond)
	defer idle.Stop()
	expiry := time.NewTimer(c.lease.remaining())
	defer expiry.Stop()
	select {
	case <-c.failed:
		return nil, c.failure()
	case <-c.lease.Lost():
		return nil, c.fenced()
	case <-expiry.C:
		return nil, c.fenced()
	case <-ctx.Done():
		return nil, nil
	case <-idle.C:
		return nil, nil
	case h := <-c.out:
		recs := c.take(h, max)
		if err := c.fenced(); err != nil {
			return nil, err
		}
		return recs, nil
	}
}

// Commit implements outbox.Cursor; it is refused once the lease is lost
// (storage would refuse the progress writes anyway).
func (c *cursor) Commit(ctx context.Context, pos outbox.Position) error {
	if err := c.fenced(); err != nil {
		return err
	}
	return c.tracker.Commit(ctx, pos)
}

// Close stops the reader; it is safe to call more than once, and after
// the lease was lost (which stops the reader first). The reader's context
// goes first and its consumers waiting in End are released last: once
// released, the library would go on to save the next generation, past
// rows the broker never acknowledged, with any context still alive.
func (c *cursor) Close() error {
	c.cancel()
	c.stop()
	c.tracker.Close()
	<-c.done
	return nil
}
