package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/retry"
)

// Config configures the publisher. Its zero value needs only Brokers.
type Config struct {
	Brokers []string
	// TopicTemplate routes messages. The default, TopicPerAggregateType,
	// keeps an aggregate's events on one partition of one topic, in
	// order; TopicPerEventType (the original design's) spreads them over
	// topics, where consumers see them in no common order.
	TopicTemplate string
	// Linger is how long franz-go waits to fill a batch. The relay waits on
	// every acknowledgement, so the default is 0: latency over batching.
	Linger time.Duration
	// RecordRetries is how often franz-go retries a record by itself
	// before the relay's own policy and breaker see the failure (default:
	// none, so the breaker hears of an outage at once). A topic being
	// auto-created is waited for separately.
	RecordRetries int
	// MaxRecordBytes bounds one record batch (default 1 MiB, Kafka's own).
	// Larger records fail permanently before being sent.
	MaxRecordBytes int32
	// DisableAutoTopicCreation stops the client asking the broker to
	// create missing topics.
	DisableAutoTopicCreation bool
	// ClientID names the client to the broker (default "outbox-relay").
	ClientID string
	// Security: TLS and SASL.
	Security Security
	// Opts are appended last, for a dialer or hooks.
	Opts []kgo.Opt
}

// NoRecordRetries as Config.RecordRetries leaves every retry to the relay.
const NoRecordRetries = -1

// Publisher implements outbox.Publisher with an idempotent producer and
// acks from all in-sync replicas.
type Publisher struct {
	client         *kgo.Client
	router         *Router
	reach          *reachability
	once           sync.Once
	maxRecordBytes int32
	linger         time.Duration
	// runs sends runs of several messages of one aggregate; see
	// PublishBatch.
	runs *runFlusher
	// seenTopics holds the topics a record was acknowledged on: a run for
	// any other topic starts with its first message alone.
	seenTopics sync.Map
	// autoCreate: the broker creates a missing topic on first use, which
	// is worth a short wait; without it a missing topic stays missing.
	autoCreate bool

	// inflight holds, by event id, the records the client still has: a
	// publish that gave up waiting (its attempt timed out, the broker died
	// mid-request, or PublishRuns answered it ErrInFlight) leaves its
	// record with the client, which may yet deliver it. The next attempt
	// for that event waits for the same record instead of sending a copy,
	// so a repeat is not a duplicate; and a record delivered while no one
	// waited is remembered (kept) until an attempt is told it is done, or
	// for a while.
	mu       sync.Mutex
	inflight map[uuid.UUID]*pending
	kept     []keptRecord // oldest first, from keptHead on
	keptHead int
}

type pending struct {
	done chan struct{}
	err  error
	// Guarded by Publisher.mu: no attempt waits for it now; and who is
	// told when it settles (PublishRuns' calls).
	abandoned bool
	settled   []func()
}

type keptRecord struct {
	id uuid.UUID
	at time.Time
}

// keptFor bounds how long, and how many, delivered records whose publish
// gave up are remembered: far longer than any retry takes to come back.
const (
	keptFor = 10 * time.Minute
	keptMax = 100_000
)

var (
	_ outbox.Publisher     = (*Publisher)(nil)
	_ outbox.RunsPublisher = (*Publisher)(nil)
	_ outbox.BrokerWatcher = (*Publisher)(nil)
)

// NewPublisher validates cfg and connects lazily: no broker is dialled
// until the first publish.
func NewPublisher(cfg Config) (*Publisher, error) {
	if len(cfg.Brokers) == 0 {
		return nil, fmt.Errorf("kafka: Brokers is empty")
	}
	if cfg.TopicTemplate == "" {
		cfg.TopicTemplate = TopicPerAggregateType
	}
	router, err := NewRouter(cfg.TopicTemplate)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	if cfg.Linger < 0 {
		return nil, fmt.Errorf("kafka: Linger must not be negative, got %s", cfg.Linger)
	}
	switch {
	case cfg.RecordRetries == NoRecordRetries:
		cfg.RecordRetries = 0
	case cfg.RecordRetries < 0:
		return nil, fmt.Errorf("kafka: RecordRetries must not be negative (or NoRecordRetries), got %d", cfg.RecordRetries)
	}
	if cfg.MaxRecordBytes < 0 {
		return nil, fmt.Errorf("kafka: MaxRecordBytes must not be negative, got %d", cfg.MaxRecordBytes)
	}
	if cfg.MaxRecordBytes == 0 {
		cfg.MaxRecordBytes = 1 << 20
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "outbox-relay"
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(cfg.Linger),
		kgo.RecordRetries(cfg.RecordRetries),
		// Short, bounded client retries: longer waits belong to the relay,
		// whose breaker must hear about an outage within a second.
		kgo.RetryBackoffFn(func(tries int) time.Duration {
			return min(time.Duration(tries)*50*time.Millisecond, 250*time.Millisecond)
		}),
		// A failed metadata load is retried after this, not kgo's 5 s: on
		// a dead connection each publish attempt would otherwise take 5 s
		// and five of them (the breaker's threshold) half a minute.
		kgo.MetadataMinAge(250 * time.Millisecond),
		kgo.ProducerBatchMaxBytes(cfg.MaxRecordBytes),
		// Same partitioner as the Java client, so keys land where other
		// producers of the same topic put them.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	}
	if !cfg.DisableAutoTopicCreation {
		opts = append(opts, kgo.AllowAutoTopicCreation())
	}
	sec, err := cfg.Security.Opts()
	if err != nil {
		return nil, err
	}
	opts = append(opts, sec...)
	reach := newReachability(250 * time.Millisecond)
	opts = append(opts, kgo.WithHooks(reach))
	client, err := kgo.NewClient(append(opts, cfg.Opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka: new client: %w", err)
	}
	runs := newRunFlusher(int(cfg.MaxRecordBytes) * 3 / 4)
	runOpts := append(opts, kgo.ClientID(cfg.ClientID+"-runs"), kgo.ManualFlushing(), kgo.MaxBufferedRecords(1<<20), kgo.WithHooks(runs))
	runs.client, err = kgo.NewClient(append(runOpts, cfg.Opts...)...)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("kafka: new client: %w", err)
	}
	reach.ping = client.Ping
	p := &Publisher{client: client, router: router, reach: reach, autoCreate: !cfg.DisableAutoTopicCreation, maxRecordBytes: cfg.MaxRecordBytes,
		runs: runs, inflight: map[uuid.UUID]*pending{}}
	// The client's own value: an option in cfg.Opts may have set it.
	p.linger, _ = client.OptValue(kgo.ProducerLinger).(time.Duration)
	go p.runs.serve(p)
	return p, nil
}

// Publish sends m and waits for the broker's acknowledgement, or until ctx
// ends. Giving up leaves the record with the client (the broker may have
// it already); publishing the same event again waits for that record
// rather than sending a second copy.
func (p *Publisher) Publish(ctx context.Context, m outbox.Message) error {
	topic, err := p.router.Topic(m)
	if err != nil {
		return err
	}
	rec := Record(m, topic)
	err = p.produce(ctx, m, rec)
	// A topic the broker is auto-creating answers UNKNOWN_TOPIC_OR_PARTITION
	// for a moment: wait for it here (up to a second) rather than let the
	// first event of a new type count as a broker failure.
	for wait := 0; p.autoCreate && errors.Is(err, kerr.UnknownTopicOrPartition) && wait < 20; wait++ {
		if retry.Wait(ctx, 50*time.Millisecond) != nil {
			break
		}
		err = p.produce(ctx, m, Record(m, topic))
	}
	if err != nil {
		return Classify(fmt.Errorf("kafka: publish %s to %s: %w", m.ID, topic, err))
	}
	return nil
}

// PublishBatch sends msgs, consecutive messages of one aggregate, and
// waits for their acknowledgements in order: it returns at the first
// failure, with how many were acknowledged before it.
//
// No message may reach the log ahead of one that failed. The client
// pipelines produce requests, and when one is refused it fails the
// records after it but not those produced a moment later, which it then
// sends under a new producer epoch; nor does a broker that has no state
// for the producer on a partition refuse a later request whose sequence
// does not follow. So a run of several messages is never pipelined: it
// goes through the run client (see runFlusher), where it is one batch of
// one produce request, appended or refused whole. A message the client
// refuses before buffering it (too large, no topic to route to) and the
// first message for a topic not yet seen acknowledged (whose metadata
// may take a while) go alone, after the ones before them.
func (p *Publisher) PublishBatch(ctx context.Context, msgs []outbox.Message) (int, error) {
	done := 0
	for done < len(msgs) {
		if n, err := p.waitEarlier(ctx, msgs[done:]); n > 0 || err != nil {
			done += n
			if err != nil {
				return done, err
			}
			continue
		}
		end, bytes := done+1, batchOverhead+recordBytes(msgs[done])
		for end < len(msgs) && !p.alone(msgs[end]) && !p.hasPending(msgs[end]) && bytes+recordBytes(msgs[end]) <= p.runs.maxBytes {
			bytes += recordBytes(msgs[end])
			end++
		}
		if end-done == 1 || p.alone(msgs[done]) || !p.topicSeen(msgs[done]) {
			if err := p.Publish(ctx, msgs[done]); err != nil {
				return done, err
			}
			done++
			continue
		}
		n, err := p.runs.publish(ctx, p, msgs[done:end])
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// PublishRuns implements outbox.RunsPublisher: runs of different
// aggregates at once, each as PublishBatch sends it. A run of one message
// for a topic already acknowledged is handed to the client with the
// others and waited for after them all were, so a backlog over many
// aggregates costs the client's batching, not one wait per message; the
// others go through PublishBatch side by side. Messages of different
// aggregates have no order between them, so nothing here may be overtaken.
//
// It does not wait for a straggler: once one handed record is settled, the
// others have as long again as that took, and at least stragglerWait,
// before the call returns with outbox.ErrInFlight for each one still out.
// So a record slow to be acknowledged (a slow broker or partition) delays
// the others' answers by that much, not by up to the caller's deadline;
// the caller's next attempt of it waits for the same record.
func (p *Publisher) PublishRuns(ctx context.Context, runs [][]outbox.Message, results []outbox.RunResult) {
	type started struct {
		run   int
		w     *pending
		topic string
	}
	handed := make([]started, 0, len(runs))
	recCtx := context.WithoutCancel(ctx)
	settled := make(chan struct{}, len(runs))
	notify := func() { settled <- struct{}{} }
	var wg sync.WaitGroup
	// A panic on a goroutine of this call is raised again in the caller,
	// where the relay's worker guard ends the run with it.
	var panicked atomic.Value
	for i, run := range runs {
		m := run[0]
		if topic, err := p.router.Topic(m); err == nil && len(run) == 1 && recordBytes(m) <= int(p.maxRecordBytes)-batchOverhead {
			if _, seen := p.seenTopics.Load(topic); seen {
				handed = append(handed, started{run: i, w: p.start(recCtx, m, Record(m, topic), notify), topic: topic})
				continue
			}
		}
		wg.Go(func() {
			defer func() {
				if r := recover(); r != nil {
					panicked.Store(fmt.Sprint(r))
				}
			}()
			n, err := p.PublishBatch(ctx, run)
			results[i] = outbox.RunResult{Acked: n, Err: err}
		})
	}
	began := time.Now()
	var cutoff <-chan time.Time
wait:
	for left := len(handed); left > 0; left-- {
		select {
		case <-settled:
			if cutoff == nil && left > 1 { // none awaited after the last
				t := time.NewTimer(stragglerCutoff(time.Since(began)))
				defer t.Stop()
				cutoff = t.C
			}
		case <-cutoff:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	for _, s := range handed {
		if ctx.Err() == nil && p.abandon(s.w) == 1 {
			results[s.run] = outbox.RunResult{Err: fmt.Errorf("kafka: publish %s to %s: %w", runs[s.run][0].ID, s.topic, outbox.ErrInFlight)}
			continue
		}
		if err := p.wait(ctx, s.w); err != nil {
			if errors.Is(err, kerr.UnknownTopicOrPartition) {
				p.seenTopics.Delete(s.topic) // its next message goes alone, waiting for the topic
			}
			results[s.run] = outbox.RunResult{Err: Classify(fmt.Errorf("kafka: publish %s to %s: %w", runs[s.run][0].ID, s.topic, err))}
			continue
		}
		results[s.run] = outbox.RunResult{Acked: 1}
	}
	wg.Wait()
	if r := panicked.Load(); r != nil {
		panic(r)
	}
}

// stragglerWait is the least a PublishRuns call waits for its other
// records once one was settled.
const stragglerWait = 50 * time.Millisecond

// stragglerCutoff is how long a PublishRuns call waits for its other
// records once one was settled, elapsed after it handed them over: as
// long again, and at least stragglerWait.
func stragglerCutoff(elapsed time.Duration) time.Duration {
	return max(stragglerWait, elapsed)
}

// waitEarlier waits for the leading messages an earlier attempt left with
// a client, and reports how many of them were acknowledged.
func (p *Publisher) waitEarlier(ctx context.Context, msgs []outbox.Message) (int, error) {
	n := 0
	for n < len(msgs) && p.hasPending(msgs[n]) {
		if err := p.Publish(ctx, msgs[n]); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (p *Publisher) hasPending(m outbox.Message) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inflight[m.ID] != nil
}

// alone reports whether m must be sent on its own: the client could fail
// it before buffering (too large for a batch by itself, with room for the
// batch's overhead, or unroutable), leaving later records to go ahead.
func (p *Publisher) alone(m outbox.Message) bool {
	if _, err := p.router.Topic(m); err != nil {
		return true
	}
	return recordBytes(m) > int(p.maxRecordBytes)-batchOverhead
}

// recordBytes is more than m's record takes in a batch.
func recordBytes(m outbox.Message) int {
	size := 2*len(m.AggregateID) + len(m.Payload) + len(m.Type) + len(m.AggregateType) + 160
	for k, v := range m.Headers {
		size += len(k) + len(v) + 8
	}
	return size
}

func (p *Publisher) runBytes(msgs []outbox.Message) int {
	n := batchOverhead
	for _, m := range msgs {
		n += recordBytes(m)
	}
	return n
}

// batchOverhead is more than a record batch's header and one record's
// framing take, so a record that passes alone fits a batch by itself.
const batchOverhead = 1024

// topicSeen reports whether a record for m's topic was acknowledged.
func (p *Publisher) topicSeen(m outbox.Message) bool {
	topic, err := p.router.Topic(m)
	if err != nil {
		return false
	}
	_, ok := p.seenTopics.Load(topic)
	return ok
}

// settle ends w, the pending record of event id, with the client's answer.
func (p *Publisher) settle(id uuid.UUID, w *pending, r *kgo.Record, err error) {
	if err == nil && r != nil {
		if _, seen := p.seenTopics.Load(r.Topic); !seen { // a Store allocates, even of a key present
			p.seenTopics.Store(r.Topic, struct{}{})
		}
	}
	p.mu.Lock()
	if err != nil || !w.abandoned {
		delete(p.inflight, id)
	} else {
		p.keepLocked(id)
	}
	w.err = err
	close(w.done)
	tell := w.settled
	w.settled = nil
	p.mu.Unlock()
	for _, fn := range tell {
		fn()
	}
}

// abandon leaves each of ws that is not settled with the client, for a
// later attempt of the same event to wait on, and reports how many.
func (p *Publisher) abandon(ws ...*pending) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, w := range ws {
		if p.abandonLocked(w) {
			n++
		}
	}
	return n
}

func (p *Publisher) abandonLocked(w *pending) bool {
	select {
	case <-w.done:
		return false
	default:
		w.abandoned = true
		return true
	}
}

// produce hands rec to the client and waits for its outcome; see start
// and wait.
func (p *Publisher) produce(ctx context.Context, m outbox.Message, rec *kgo.Record) error {
	return p.wait(ctx, p.start(context.WithoutCancel(ctx), m, rec, nil))
}

// start hands rec to the client, unless the client still has (or has
// delivered) an earlier record of the same event. recCtx is the record's
// own context, which never ends (context.WithoutCancel): only the client's
// retry limits fail it, and only when that is safe. Callers stop waiting
// through their own context instead.
// settled, when not nil, is called once the record is settled.
func (p *Publisher) start(recCtx context.Context, m outbox.Message, rec *kgo.Record, settled func()) *pending {
	p.mu.Lock()
	if w := p.inflight[m.ID]; w != nil {
		// An earlier attempt left it: this one waits for it.
		select {
		case <-w.done: // delivered while no one waited: this attempt is told
			delete(p.inflight, m.ID)
			p.mu.Unlock()
			if settled != nil {
				settled()
			}
		default:
			w.abandoned = false
			if settled != nil {
				w.settled = append(w.settled, settled)
			}
			p.mu.Unlock()
		}
		return w
	}
	w := &pending{done: make(chan struct{})}
	if settled != nil {
		w.settled = []func(){settled}
	}
	p.inflight[m.ID] = w
	p.mu.Unlock()
	// Outside p.mu: Produce blocks while the client's buffer is full, and
	// the buffer empties only as records settle, which takes p.mu.
	p.client.Produce(recCtx, rec, func(r *kgo.Record, err error) { p.settle(m.ID, w, r, err) })
	return w
}

// wait waits for w's outcome or for ctx; giving up leaves the record with
// the client (abandoned), for a later attempt of the same event to wait on.
func (p *Publisher) wait(ctx context.Context, w *pending) error {
	select {
	case <-w.done:
		return w.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.abandonLocked(w) { // settled while we gave up: that is the answer
		return w.err
	}
	if err := p.reach.err(); err != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return ctx.Err()
}

// keepLocked remembers a delivered record whose publish gave up, and
// forgets the oldest ones past keptFor or keptMax.
func (p *Publisher) keepLocked(id uuid.UUID) {
	now := time.Now()
	p.kept = append(p.kept, keptRecord{id: id, at: now})
	for p.keptHead < len(p.kept) && (len(p.kept)-p.keptHead > keptMax || now.Sub(p.kept[p.keptHead].at) > keptFor) {
		old := p.kept[p.keptHead].id
		if w := p.inflight[old]; w != nil && w.abandoned {
			select {
			case <-w.done:
				delete(p.inflight, old)
			default:
			}
		}
		p.keptHead++
	}
	// Forgotten entries are dropped in bulk, not one copy of the list per
	// record kept.
	if p.keptHead > len(p.kept)/2 {
		p.kept = append(p.kept[:0], p.kept[p.keptHead:]...)
		p.keptHead = 0
	}
}

// Linger is how long the producer waits to fill a request (Config.Linger,
// or a kgo.ProducerLinger among Config.Opts):
// a relay does not hold its reader back to gather records for a producer
// that gathers them itself.
func (p *Publisher) Linger() time.Duration { return p.linger }

// WatchBroker implements outbox.BrokerWatcher from the client's connection
// attempts: fn hears an error when every broker refuses connections, and
// nil once one accepts again.
func (p *Publisher) WatchBroker(fn func(err error)) (stop func()) { return p.reach.watch(fn) }

// Unreachable is the current outage (every broker refusing connections),
// or nil.
func (p *Publisher) Unreachable() error { return p.reach.err() }

// Ping asks a broker for metadata: a health check. While every broker
// refuses connections it answers at once with that outage.
func (p *Publisher) Ping(ctx context.Context) error {
	if err := p.reach.err(); err != nil {
		return Classify(err)
	}
	return Classify(p.client.Ping(ctx))
}

// Close flushes nothing (every publish already waited) and disconnects.
// It is safe to call more than once.
func (p *Publisher) Close() error {
	p.once.Do(func() {
		p.reach.close()
		p.runs.close()
		p.runs.client.Close()
		<-p.runs.exited
		p.client.Close()
	})
	return nil
}
