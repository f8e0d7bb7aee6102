package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outbox-dev/outbox/breaker"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/retry"
)

// Relay publishes a source's messages. Build it with New and run Serve,
// usually under a supervisor; the breaker and counters survive restarts.
type Relay struct {
	src Source
	pub Publisher
	dlq DeadLetterStore
	cfg Config
	br  *breaker.Breaker
	log *slog.Logger

	poke    chan struct{}
	running atomic.Bool
	active  atomic.Bool // the source is open: not waiting as a standby
	stats   counters
	// lastAck is when the broker last acknowledged a message (unix ns):
	// the evidence that a failing aggregate is stuck on its own, while
	// others are published, rather than held up by an outage.
	lastAck atomic.Int64

	stuckMu sync.Mutex
	stuck   map[outbox.AggregateKey]*StuckAggregate
}

var _ interface{ Serve(context.Context) error } = (*Relay)(nil)

// New checks cfg and builds a relay.
func New(src Source, pub Publisher, dlq DeadLetterStore, cfg Config) (*Relay, error) {
	if src == nil || pub == nil || dlq == nil {
		return nil, fmt.Errorf("%w: source, publisher and dead-letter store are required", ErrInvalidConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	r := &Relay{src: src, pub: pub, dlq: dlq, cfg: cfg, log: cfg.Logger, poke: make(chan struct{}, 1),
		stuck: map[outbox.AggregateKey]*StuckAggregate{}}
	bcfg := cfg.Breaker
	bcfg.OnStateChange = func(from, to breaker.State) {
		r.log.Warn("circuit breaker", "from", from.String(), "to", to.String())
		hooks(cfg.Hooks).each(func(h Hook) {
			if bh, ok := h.(BreakerHook); ok {
				bh.OnBreakerStateChange(from, to)
			}
		})
		if cfg.Breaker.OnStateChange != nil {
			cfg.Breaker.OnStateChange(from, to)
		}
	}
	br, err := breaker.New(bcfg)
	if err != nil {
		return nil, fmt.Errorf("%w: Breaker: %w", ErrInvalidConfig, err)
	}
	r.br = br
	return r, nil
}

// Running reports whether Serve is between start and return.
func (r *Relay) Running() bool { return r.running.Load() }

// Active reports whether the relay reads its source; a relay that is
// Running but not Active is opening it, or waiting as a standby while
// another relay reads the same source.
func (r *Relay) Active() bool { return r.active.Load() }

// Poke asks the relay to look for operator requests now.
func (r *Relay) Poke() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// Serve runs until ctx ends (returning nil) or the source fails (returning
// the error, so a supervisor restarts it from the checkpoint). An error
// the source marks outbox.Fatal is returned as it is: restarting cannot
// help, and a supervisor should end the process with it.
func (r *Relay) Serve(ctx context.Context) error {
	r.running.Store(true)
	defer r.running.Store(false)
	if w, ok := r.pub.(BrokerWatcher); ok {
		stop := w.WatchBroker(r.brokerChanged)
		defer stop()
	}
	cur, err := r.src.Open(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("relay: open source: %w", err)
	}
	defer cur.Close()
	r.active.Store(true)
	defer r.active.Store(false)
	parked, err := r.dlq.ParkedAggregates(ctx)
	if err != nil {
		return fmt.Errorf("relay: load parked aggregates: %w", err)
	}
	run := &run{
		Relay:     r,
		cur:       cur,
		lanes:     map[outbox.AggregateKey]*lane{},
		parked:    map[outbox.AggregateKey]bool{},
		actions:   map[outbox.AggregateKey]bool{},
		slots:     make(chan struct{}, r.cfg.MaxInFlight),
		work:      make(chan []*lane, r.cfg.Workers),
		headMoved: make(chan struct{}, 1),
	}
	run.send = run.attemptChain(cur)
	run.groupSize = 1
	if _, ok := r.pub.(outbox.RunsPublisher); ok {
		run.groupSize = maxGroup
	}
	l, lingers := r.pub.(lingerer)
	run.readerPublishes = run.groupSize > 1 && !(lingers && l.Linger() > 0)
	for _, p := range parked {
		run.parked[p.Key] = true
	}
	r.stats.parked.Store(int64(len(parked)))
	return run.serve(ctx)
}

// brokerChanged hears the publisher's own view of the broker: an outage
// opens the breaker at once, even while publishes hang waiting for an
// answer, and the broker answering again closes it at once, so delivery
// does not wait out the open timeout.
func (r *Relay) brokerChanged(err error) {
	if err != nil {
		r.log.Error("broker unreachable; holding back", "err", err)
		r.br.Trip()
		return
	}
	if r.br.State() != breaker.Closed {
		r.log.Info("broker answers again; resuming")
	}
	r.br.Reset()
}

// run is the state of one Serve call; a restart starts a fresh one from
// the checkpoint.
type run struct {
	*Relay
	cur Cursor

	mu      sync.Mutex
	lanes   map[outbox.AggregateKey]*lane
	spare   []*lane // emptied lanes, to be used again (see releaseLocked)
	parked  map[outbox.AggregateKey]bool
	actions map[outbox.AggregateKey]bool // requests queued in a lane
	window  window

	slots chan struct{} // one per record read and not yet settled: the in-flight bound
	// work hands the workers groups of new lanes: those a read of the
	// source started, published together (see drainGroup).
	work chan []*lane
	// asideWG counts the goroutines of lanes taken out of their group to
	// be retried, dead-lettered or acted on alone (see drainLane).
	asideWG sync.WaitGroup
	// headMoved is signalled when the oldest unsettled record settles: a
	// reader held back by MaxBehind may go on.
	headMoved chan struct{}
	// send is one publish attempt: fenced, through the breaker, timed
	// (see publish.go).
	send sendFunc
	// stop ends this run with an error (set by serve).
	stop context.CancelCauseFunc
	// aside drains a lane on a goroutine of its own (set by serve).
	aside func(*lane)
	// groupSize bounds the lanes of a group (see maxGroup).
	groupSize int
	// readerPublishes: the reader may publish a read itself (see read).
	readerPublishes bool
	// busy counts the groups being published, by workers or on a reader
	// (a worker draining a lane alone counts too): while none is, the
	// reader publishes a read of one group itself (see read); else it
	// hands it to a worker, so no more than Workers groups, and one on a
	// reader, publish at once.
	busy atomic.Int32
	// drainCtx ends DrainTimeout after the run's context (see serve).
	drainCtx context.Context
	// readers counts the goroutines of read: the reader, and those that
	// handed reading over and still publish (see publishOnReader).
	readers sync.WaitGroup
	// readEnded hears why the reader stopped (nil: ctx ended).
	readEnded chan error
}

type lane struct {
	key   outbox.AggregateKey
	queue []item
	// announced is how many of the first items were announced to the
	// PublishStartHooks: a run that leaves its group is not announced
	// twice.
	announced int
	// tried is the failed attempt of its first record in a group: the
	// first attempt of its first round alone, so its hooks and failure
	// count hear of it.
	tried *groupAttempt
	// inFlight: its first record is with the client, unanswered
	// (outbox.ErrInFlight). A stopping run still waits for it, within
	// DrainTimeout: the broker may take it, and then it must be settled
	// and checkpointed, or the next start publishes it again.
	inFlight bool
}

// groupAttempt is a lane's failed attempt in its group's round.
type groupAttempt struct {
	at  time.Time
	err error
}

type item struct {
	rec    Record
	entry  *entry                  // nil for an operator action
	action *outbox.ParkedAggregate // set for an operator action
}

// guard runs fn for role ("worker": a worker's loop; "reader": a publish
// made on the reader; "aside lane": a lane set aside). A panic in it must
// not kill the process nor go unnoticed: it ends this run with an error
// naming the role, so the supervisor restarts the relay from its
// checkpoint and the message in hand is read again.
func (r *run) guard(role string, fn func()) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("relay "+role+" panicked", "panic", p)
			r.stop(fmt.Errorf("relay: %s panic: %v", role, p))
		}
	}()
	fn()
}

func (r *run) serve(ctx context.Context) error {
	ctx, cancelRun := context.WithCancelCause(ctx)
	defer cancelRun(nil)
	r.stop = cancelRun
	// Publishes in flight when ctx ends get DrainTimeout to finish, so a
	// graceful stop does not turn acknowledged work into duplicates.
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	stopDrain := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(r.cfg.DrainTimeout, cancelDrain)
		context.AfterFunc(drainCtx, func() { t.Stop() })
	})
	defer stopDrain()
	r.drainCtx = drainCtx

	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Go(func() { r.guard("worker", func() { r.worker(ctx, drainCtx) }) })
	}
	r.aside = func(l *lane) {
		r.asideWG.Go(func() { r.guard("aside lane", func() { r.drainLane(ctx, drainCtx, l) }) })
	}
	committerDone := make(chan struct{})
	go func() { defer close(committerDone); r.committer(ctx) }()
	wg.Go(func() { r.actionPoller(ctx) })

	r.readEnded = make(chan error, 1)
	r.startReader(ctx)
	err := <-r.readEnded
	if err != nil {
		cancelRun(err) // the workers stop; in-flight publishes get DrainTimeout
	}
	wg.Wait()
	r.readers.Wait()
	r.asideWG.Wait()
	<-committerDone
	if cause := context.Cause(ctx); err == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	// The last checkpoint, past whatever drained.
	finalCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if cerr := r.commit(finalCtx); cerr != nil && err == nil && ctx.Err() == nil {
		err = cerr
	}
	return err
}

// read pulls records while the breaker allows and the window has room. It
// returns errHandedOver when another goroutine reads on (see
// publishOnReader).
func (r *run) read(ctx context.Context) error {
	for {
		if err := r.br.WaitUntilCallable(ctx); err != nil {
			return nil
		}
		select {
		case r.slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		behind, ok := r.waitBehind(ctx)
		if !ok {
			<-r.slots
			return nil
		}
		free := cap(r.slots) - len(r.slots) + 1
		recs, err := r.cur.Next(ctx, min(r.cfg.BatchSize, free, r.cfg.MaxBehind-behind))
		<-r.slots
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("relay: read source: %w", err)
		}
		// The lanes this read starts are published together, in groups,
		// so a backlog over many aggregates goes out many at a time.
		var fresh []*lane
		dispatched := false
		for _, rec := range recs {
			select {
			case r.slots <- struct{}{}:
			default:
				// The window is full: what was read goes out before
				// waiting for it to drain.
				if !r.dispatch(ctx, fresh) {
					return nil
				}
				fresh, dispatched = nil, true
				select {
				case r.slots <- struct{}{}:
				case <-ctx.Done():
					return nil
				}
			}
			r.mu.Lock()
			e := r.window.add(rec.Position, rec.Message.Timestamp)
			r.stats.notePeak(r.window.len)
			l := r.enqueueLocked(rec.Message.Key(), item{rec: rec, entry: e})
			r.mu.Unlock()
			r.stats.read.Add(1)
			if l != nil {
				fresh = append(fresh, l)
			}
			if len(fresh) == r.groupSize {
				if !r.dispatch(ctx, fresh) {
					return nil
				}
				fresh, dispatched = nil, true
			}
		}
		if len(fresh) > 0 && !dispatched && r.readerPublishes && r.busy.Load() == 0 {
			// A read that is one group, with nothing else publishing: the
			// reader publishes it itself. While it waits for the broker,
			// the transactions committed meanwhile gather in the source
			// and go together in the next read: one publish per round
			// trip, not one per transaction (7% less relay CPU per event
			// at 5,000 ev/s in outbox-lab bench's latency stage). A
			// backlog still fills several groups a read, for the workers
			// to publish at once.
			if !r.publishOnReader(ctx, fresh) {
				return errHandedOver
			}
			continue
		}
		if !r.dispatch(ctx, fresh) {
			return nil
		}
	}
}

// publishOnReader publishes group, the lanes one read started, on the
// reader, and reports whether this goroutine reads on. A publish that takes
// longer than readerHandover (a broker slow to answer) hands reading over
// to a new goroutine, so a slow partition holds up other aggregates that
// long at most; this one returns false once the publish ends.
func (r *run) publishOnReader(ctx context.Context, group []*lane) bool {
	h := &handover{}
	t := time.AfterFunc(readerHandover, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if !h.published {
			h.handed = true
			r.startReader(ctx)
		}
	})
	r.busy.Add(1)
	r.guard("reader", func() { r.drainGroup(ctx, r.drainCtx, group, true) })
	r.busy.Add(-1)
	t.Stop()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.published = true
	return !h.handed
}

// lingerer is a publisher whose producer holds records back to fill its
// requests (a linger). The reader does not publish through one itself: what
// commits during the linger would wait for the reader, up to
// readerHandover, where handed to the producer at once it joins the
// request being filled.
type lingerer interface{ Linger() time.Duration }

// readerHandover is how long a publish on the reader holds up reading (see
// publishOnReader): several round trips to a healthy broker (commit to
// broker append was under 1 ms at the median in outbox-lab bench), and
// Kafka's own default linger since 4.0.
const readerHandover = 5 * time.Millisecond

// handover settles which comes first: the publish on the reader ending,
// or reading going on on a new goroutine.
type handover struct {
	mu        sync.Mutex
	published bool
	handed    bool
}

// startReader reads on a new goroutine; the reader that ends the run (not
// one that handed over) tells serve why.
func (r *run) startReader(ctx context.Context) {
	r.readers.Go(func() {
		if err := r.read(ctx); !errors.Is(err, errHandedOver) {
			r.readEnded <- err
		}
	})
}

// errHandedOver ends a read loop that another goroutine took over.
var errHandedOver = errors.New("reading handed over")

// maxGroup bounds the lanes a worker publishes together, when the
// publisher takes runs of many aggregates at once (outbox.RunsPublisher);
// otherwise each lane is a group of its own.
const maxGroup = 128

// dispatch hands group, lanes no worker has, to a worker. It reports false
// when ctx ended first.
func (r *run) dispatch(ctx context.Context, group []*lane) bool {
	if len(group) == 0 {
		return true
	}
	select {
	case r.work <- group:
		return true
	case <-ctx.Done():
		return false
	}
}

// waitBehind waits while the records read from the oldest unsettled one
// on reach MaxBehind, and returns how many there are (false when ctx
// ended).
func (r *run) waitBehind(ctx context.Context) (int, bool) {
	for {
		r.mu.Lock()
		behind := r.window.behind()
		r.mu.Unlock()
		if behind < r.cfg.MaxBehind {
			return behind, true
		}
		select {
		case <-r.headMoved:
		case <-ctx.Done():
			return 0, false
		}
	}
}

// enqueue appends it to its aggregate's lane, and returns the lane when
// it is new: no worker has it yet, the caller dispatches it.
func (r *run) enqueue(key outbox.AggregateKey, it item) *lane {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.enqueueLocked(key, it)
}

func (r *run) enqueueLocked(key outbox.AggregateKey, it item) *lane {
	l, busy := r.lanes[key]
	if !busy {
		if n := len(r.spare); n > 0 {
			l, r.spare = r.spare[n-1], r.spare[:n-1]
			l.key = key
		} else {
			l = &lane{key: key}
		}
		r.lanes[key] = l
	}
	l.queue = append(l.queue, it)
	if busy {
		return nil
	}
	return l
}

func (r *run) worker(ctx, drainCtx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case group := <-r.work:
			r.busy.Add(1)
			if r.groupSize == 1 {
				r.drainLane(ctx, drainCtx, group[0])
			} else {
				r.drainGroup(ctx, drainCtx, group, false)
			}
			r.busy.Add(-1)
		}
	}
}

// drainGroup publishes its lanes' records in rounds: each round sends the
// next record of every lane in one attempt, and settles what was
// acknowledged; a lane stays in the group while it has records. A lane
// leaves the group, to be drained on its own (drainLane), when its record
// failed (its retries then hold up no other aggregate), when its next item
// is an operator action or an undecodable record, when its aggregate is
// parked, when it holds more than one record (a hot aggregate's runs
// pipeline through the publisher one after another alone, where in the
// group each would wait for the round), and when its record was still in
// flight as the round ended (outbox.ErrInFlight: the publisher did not
// hold the round for it). Every lane still has at most one record in
// flight. On a worker, the last lane to leave is drained there, since
// nothing else waits on it; on the reader (onReader), every lane that
// leaves goes to a goroutine of its own, so no retry holds up reading.
func (r *run) drainGroup(ctx, drainCtx context.Context, group []*lane, onReader bool) {
	held := group
	scratch := groupScratches.Get().(*groupScratch)
	msgs, runs, ready, alone, results := scratch.msgs, scratch.runs, scratch.ready, scratch.alone, scratch.results
	defer func() {
		clear(msgs[:cap(msgs)]) // let the messages go
		clear(ready[:cap(ready)])
		clear(alone[:cap(alone)])
		clear(results[:cap(results)])
		clear(runs[:cap(runs)])
		*scratch = groupScratch{msgs[:0], runs[:0], ready[:0], alone[:0], results[:0]}
		groupScratches.Put(scratch)
	}()
	for len(held) > 0 {
		msgs, ready, alone = msgs[:0], ready[:0], alone[:0]
		r.mu.Lock()
		for _, l := range held {
			if len(l.queue) == 0 || ctx.Err() != nil {
				if len(l.queue) == 0 {
					r.releaseLocked(l)
				}
				continue
			}
			if it := l.queue[0]; it.action != nil || it.rec.Err != nil || r.parked[l.key] || len(l.queue) > 1 {
				alone = append(alone, l)
				continue
			}
			msgs = append(msgs, l.queue[0].rec.Message)
			ready = append(ready, l)
		}
		r.mu.Unlock()
		began := time.Now()
		runs, results = runs[:0], slices.Grow(results[:0], len(msgs))[:len(msgs)]
		clear(results)
		for i, l := range ready {
			runs = append(runs, msgs[i:i+1:i+1])
			if l.announced == 0 {
				r.publishStart(runs[i])
				l.announced = 1
			}
		}
		if len(runs) > 0 {
			r.send(drainCtx, runs, results)
		}
		held = held[:0]
		for i, l := range ready {
			switch {
			case results[i].Acked > 0:
				r.acknowledged(msgs[i], 1)
				r.settle(l, 1)
				held = append(held, l)
			case drainCtx.Err() == nil && errors.Is(results[i].Err, outbox.ErrInFlight):
				l.inFlight = true
				alone = append(alone, l) // its next attempt waits for the same record
			case drainCtx.Err() == nil && !errors.Is(results[i].Err, errFenced):
				l.tried = &groupAttempt{at: began, err: results[i].Err}
				alone = append(alone, l)
			}
		}
		if drainCtx.Err() != nil || ctx.Err() != nil {
			// Shutting down: the records not settled stay unacknowledged,
			// but those in flight are waited for.
			for _, l := range alone {
				if l.inFlight {
					r.drainLane(ctx, drainCtx, l)
				}
			}
			return
		}
		for i, l := range alone {
			if i == len(alone)-1 && len(held) == 0 && !onReader {
				r.drainLane(ctx, drainCtx, l) // nothing else waits on this worker
				return
			}
			r.aside(l)
		}
	}
}

// groupScratch is room for drainGroup's lists, used again by the next
// group: as many are kept as groups are drained at once, not one per
// worker.
var groupScratches = sync.Pool{New: func() any { return new(groupScratch) }}

type groupScratch struct {
	msgs    []outbox.Message
	runs    [][]outbox.Message
	ready   []*lane
	alone   []*lane
	results []outbox.RunResult
}

// drainLane processes a lane's items in order, one run at a time, until it
// is empty: an operator action or an undecodable record on its own, and
// consecutive records as one run of at most MaxRun, so an aggregate has at
// most one run in flight and nothing of it is published ahead of an
// earlier message that failed.
func (r *run) drainLane(ctx, drainCtx context.Context, l *lane) {
	var msgs []outbox.Message // reused for each run
	for {
		r.mu.Lock()
		if len(l.queue) == 0 || (ctx.Err() != nil && !l.inFlight) {
			if len(l.queue) == 0 {
				r.releaseLocked(l)
			}
			r.mu.Unlock()
			return
		}
		it := l.queue[0]
		msgs = msgs[:0]
		if it.action == nil && it.rec.Err == nil {
			maxRun := r.cfg.MaxRun
			if ctx.Err() != nil {
				maxRun = 1 // stopping: only the record in flight
			}
			for _, next := range l.queue[:min(len(l.queue), maxRun)] {
				if next.action != nil || next.rec.Err != nil {
					break
				}
				msgs = append(msgs, next.rec.Message)
			}
		}
		r.mu.Unlock()

		settled := 0
		switch {
		case it.action != nil:
			r.runAction(drainCtx, *it.action)
			settled = 1
		case it.rec.Err != nil:
			if r.deadLetter(drainCtx, outbox.DeadLetter{Message: it.rec.Message,
				Error: "the source could not decode this row: " + it.rec.Err.Error()}) {
				settled = 1
			}
		default:
			settled = r.handle(drainCtx, msgs, l.announced, l.tried)
			l.announced = max(l.announced, len(msgs))
			l.tried, l.inFlight = nil, false
		}
		if settled == 0 {
			return // shutting down; the records stay unacknowledged
		}
		r.settle(l, settled)
	}
}

// releaseLocked removes l, emptied, from the lanes; the caller drops it,
// and it is kept to be used again: a lane and its queue per aggregate per
// read were a tenth of the relay's allocations in the drain.
func (r *run) releaseLocked(l *lane) {
	delete(r.lanes, l.key)
	if len(r.spare) < cap(r.slots) && cap(l.queue) <= 16 {
		*l = lane{queue: l.queue[:0]}
		r.spare = append(r.spare, l)
	}
}

// settle removes the first n items of l, which are done.
func (r *run) settle(l *lane, n int) {
	records := 0
	r.mu.Lock()
	for _, it := range l.queue[:n] {
		if it.entry == nil {
			delete(r.actions, l.key)
			continue
		}
		records++
		wasHead := r.window.head == it.entry
		r.window.settle(it.entry)
		if wasHead {
			select {
			case r.headMoved <- struct{}{}:
			default:
			}
		}
	}
	clear(l.queue[:n]) // let the settled records go
	if n == len(l.queue) {
		l.queue = l.queue[:0] // its room is used again
	} else {
		l.queue = l.queue[n:]
	}
	l.announced = max(0, l.announced-n)
	r.stats.inFlight.Store(int64(r.window.len))
	r.mu.Unlock()
	for range records {
		<-r.slots // settled: room to read one more
	}
}

func (r *Relay) unstuck(key outbox.AggregateKey) {
	r.stuckMu.Lock()
	_, was := r.stuck[key]
	delete(r.stuck, key)
	r.stuckMu.Unlock()
	if was {
		hooks(r.cfg.Hooks).each(func(h Hook) {
			if sh, ok := h.(StuckHook); ok {
				sh.OnUnstuck(key)
			}
		})
	}
}

// Stuck lists the aggregates whose message has failed an attempt and is
// still being retried, the longest failing first.
func (r *Relay) Stuck() []StuckAggregate {
	r.stuckMu.Lock()
	defer r.stuckMu.Unlock()
	out := make([]StuckAggregate, 0, len(r.stuck))
	for _, s := range r.stuck {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b StuckAggregate) int { return a.Since.Compare(b.Since) })
	return out
}

// deadLetter stores dl and parks its aggregate, retrying the store until it
// answers or ctx ends. It reports whether dl was stored.
func (r *run) deadLetter(ctx context.Context, dl outbox.DeadLetter) bool {
	now := time.Now().UTC()
	dl.Status = outbox.StatusParked
	dl.FirstFailedAt, dl.LastFailedAt = now, now
	var stored outbox.DeadLetter
	for {
		var err error
		if stored, err = r.dlq.AddDeadLetter(ctx, dl); err == nil {
			break
		}
		r.log.Error("dead-letter store failed; retrying", "event_id", dl.Message.ID, "err", err)
		if retry.Wait(ctx, r.cfg.Retry.MaxDelay) != nil {
			return false
		}
	}
	key := dl.Message.Key()
	r.mu.Lock()
	newlyParked := !r.parked[key]
	r.parked[key] = true
	r.mu.Unlock()
	r.stats.deadLettered.Add(1)
	hooks(r.cfg.Hooks).each(func(h Hook) {
		if dh, ok := h.(DeadLetterHook); ok {
			dh.OnDeadLetter(stored)
		}
	})
	if newlyParked {
		r.stats.parked.Add(1)
		r.log.Warn("aggregate parked", "aggregate", key.String(), "event_id", dl.Message.ID)
		hooks(r.cfg.Hooks).each(func(h Hook) {
			if ph, ok := h.(ParkHook); ok {
				ph.OnPark(key)
			}
		})
	}
	return true
}

// committer writes the checkpoint every CommitInterval.
func (r *run) committer(ctx context.Context) {
	t := time.NewTicker(r.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.commit(ctx); err != nil && ctx.Err() == nil {
				r.log.Error("checkpoint failed; holding", "err", err)
			}
		}
	}
}

// commit moves the checkpoint to the last record before the oldest one
// not yet settled. On error it is tried again next time.
func (r *run) commit(ctx context.Context) error {
	r.mu.Lock()
	target, ok := r.window.checkpoint()
	lag := r.window.lag()
	r.mu.Unlock()
	if !ok {
		r.stats.setLag(lag)
		return nil
	}
	if err := r.cur.Commit(ctx, target.pos); err != nil {
		return fmt.Errorf("relay: commit %s: %w", target.pos, err)
	}
	r.mu.Lock()
	r.window.committed(target)
	lag = r.window.lag()
	r.mu.Unlock()
	r.stats.setLag(lag)
	hooks(r.cfg.Hooks).each(func(h Hook) {
		if ch, ok := h.(CheckpointHook); ok {
			ch.OnCheckpoint(target.pos, lag)
		}
	})
	return nil
}

// actionPoller queues operator requests into their aggregates' lanes.
func (r *run) actionPoller(ctx context.Context) {
	t := time.NewTicker(r.cfg.ActionPollInterval)
	defer t.Stop()
	for {
		if err := r.queueActions(ctx); err != nil && ctx.Err() == nil {
			r.log.Error("look for dead-letter requests", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.poke:
		}
	}
}

func (r *run) queueActions(ctx context.Context) error {
	parked, err := r.dlq.ParkedAggregates(ctx)
	if err != nil {
		return err
	}
	for _, p := range parked {
		if p.Pending == "" {
			continue
		}
		r.mu.Lock()
		queued := r.actions[p.Key]
		r.actions[p.Key] = true
		r.mu.Unlock()
		if queued {
			continue
		}
		if l := r.enqueue(p.Key, item{action: &p}); l != nil && !r.dispatch(ctx, []*lane{l}) {
			return nil
		}
	}
	return nil
}

// runAction replays or skips a parked aggregate, inside its lane.
func (r *run) runAction(ctx context.Context, p outbox.ParkedAggregate) {
	log := r.log.With("aggregate", p.Key.String(), "action", p.Pending)
	entries, err := r.dlq.ParkedMessages(ctx, p.Key)
	if err != nil {
		log.Error("load parked messages", "err", err)
		return // still pending in the store: picked up again later
	}
	if p.Pending == outbox.ActionSkip {
		// Skip exactly the entry the operator named. When it is no longer
		// parked, an earlier run of this request skipped it and was
		// interrupted later on: skip nothing more, republish the rest.
		switch i := slices.IndexFunc(entries, func(d outbox.DeadLetter) bool { return d.ID == p.PendingEntry }); {
		case i == 0:
			if err := r.dlq.ResolveDeadLetter(ctx, entries[0].ID, outbox.StatusSkipped, p.Reason); err != nil {
				log.Error("skip dead letter", "id", entries[0].ID, "err", err)
				return
			}
			entries = entries[1:]
		case i > 0 || p.PendingEntry == 0:
			// Not the failed message, or a request that names none: it
			// cannot be carried out safely. Refuse it; the aggregate stays
			// parked for the operator to decide again.
			cause := fmt.Sprintf("skip request names dead letter %d, which is not the aggregate's first parked entry", p.PendingEntry)
			log.Error("skip refused", "entry", p.PendingEntry)
			if err := r.dlq.FailAction(ctx, p.Key, 0, cause); err != nil {
				log.Error("record refused skip", "err", err)
			}
			return
		}
	}
	for _, dl := range entries {
		_, _, err := r.publish(ctx, []outbox.Message{dl.Message}, 0, nil)
		if err != nil {
			if !outbox.IsPermanent(err) {
				return // ctx ended; the request stays pending
			}
			log.Error("replay failed; aggregate stays parked", "id", dl.ID, "err", err)
			if ferr := r.dlq.FailAction(ctx, p.Key, dl.ID, err.Error()); ferr != nil {
				log.Error("record failed replay", "err", ferr)
			}
			return
		}
		if err := r.dlq.ResolveDeadLetter(ctx, dl.ID, outbox.StatusReplayed, p.Reason); err != nil {
			log.Error("mark replayed", "id", dl.ID, "err", err)
			return
		}
	}
	if err := r.dlq.CompleteAction(ctx, p.Key); err != nil {
		log.Error("unpark", "err", err)
		return
	}
	r.mu.Lock()
	wasParked := r.parked[p.Key]
	delete(r.parked, p.Key)
	r.mu.Unlock()
	if wasParked {
		r.stats.parked.Add(-1)
	}
	log.Info("aggregate released", "republished", len(entries))
	hooks(r.cfg.Hooks).each(func(h Hook) {
		if ph, ok := h.(ParkHook); ok {
			ph.OnUnpark(p.Key)
		}
	})
}

// errFenced marks a publish the cursor's Fence refused.
var errFenced = errors.New("fenced")

// ErrStuck is wrapped in the dead letter of a message parked because it
// failed transiently for longer than Config.StuckTimeout while other
// aggregates were published.
var ErrStuck = errors.New("stuck")
