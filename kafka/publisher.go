package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
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

// Publisher implements relay.Publisher with an idempotent producer and
// acks from all in-sync replicas.
type Publisher struct {
	client *kgo.Client
	router *Router
	reach  *reachability
	once   sync.Once
	// autoCreate: the broker creates a missing topic on first use, which
	// is worth a short wait; without it a missing topic stays missing.
	autoCreate bool

	// inflight holds, by event id, the records the client still has: a
	// publish that gave up waiting (its attempt timed out, or the broker
	// died mid-request) leaves its record with the client, which may yet
	// deliver it. The next attempt for that event waits for the same
	// record instead of sending a copy, so a repeat is not a duplicate;
	// and a record delivered after its publish gave up is remembered for a
	// while (kept), so an attempt that comes later is told it is done.
	mu       sync.Mutex
	inflight map[uuid.UUID]*pending
	kept     []keptRecord
}

type pending struct {
	done      chan struct{}
	err       error
	abandoned bool // guarded by Publisher.mu
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
	reach.ping = client.Ping
	return &Publisher{client: client, router: router, reach: reach, autoCreate: !cfg.DisableAutoTopicCreation,
		inflight: map[uuid.UUID]*pending{}}, nil
}

// Record builds the Kafka record for m: key = aggregate id, headers carry
// the event's identity and order.
func Record(m outbox.Message, topic string) *kgo.Record {
	headers := []kgo.RecordHeader{
		{Key: outbox.HeaderID, Value: []byte(m.ID.String())},
		{Key: outbox.HeaderType, Value: []byte(m.Type)},
		{Key: outbox.HeaderAggregateType, Value: []byte(m.AggregateType)},
		{Key: outbox.HeaderAggregateID, Value: []byte(m.AggregateID)},
		{Key: outbox.HeaderSequence, Value: []byte(strconv.FormatInt(m.Sequence, 10))},
	}
	if tp := m.Headers[outbox.HeaderTraceParent]; tp != "" {
		headers = append(headers, kgo.RecordHeader{Key: outbox.HeaderTraceParent, Value: []byte(tp)})
	}
	return &kgo.Record{
		Topic:     topic,
		Key:       []byte(m.AggregateID),
		Value:     m.Payload,
		Headers:   headers,
		Timestamp: m.Timestamp,
	}
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

// produce hands rec to the client, unless the client still has (or has
// delivered) an earlier record of the same event, and waits for the
// outcome or for ctx.
func (p *Publisher) produce(ctx context.Context, m outbox.Message, rec *kgo.Record) error {
	p.mu.Lock()
	w := p.inflight[m.ID]
	if w == nil {
		w = &pending{done: make(chan struct{})}
		p.inflight[m.ID] = w
		// The record's own context never ends: only the client's retry
		// limits fail it, and only when that is safe. Callers stop
		// waiting through ctx instead.
		p.client.Produce(context.WithoutCancel(ctx), rec, func(_ *kgo.Record, err error) {
			p.mu.Lock()
			if err != nil || !w.abandoned {
				delete(p.inflight, m.ID)
			} else {
				p.keepLocked(m.ID)
			}
			w.err = err
			close(w.done)
			p.mu.Unlock()
		})
	}
	p.mu.Unlock()
	select {
	case <-w.done:
		return w.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-w.done: // settled while we gave up: that is the answer
		return w.err
	default:
	}
	w.abandoned = true
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
	n := 0
	for n < len(p.kept) && (len(p.kept)-n > keptMax || now.Sub(p.kept[n].at) > keptFor) {
		if w := p.inflight[p.kept[n].id]; w != nil && w.abandoned {
			select {
			case <-w.done:
				delete(p.inflight, p.kept[n].id)
			default:
			}
		}
		n++
	}
	p.kept = append(p.kept[:0], p.kept[n:]...)
}

// WatchBroker implements relay.BrokerWatcher from the client's connection
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
		p.client.Close()
	})
	return nil
}
