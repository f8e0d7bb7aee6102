package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/outbox"
)

// runFlusher sends runs, several consecutive messages of one aggregate, on
// a client of its own that sends only when flushed, from one goroutine,
// one flush at a time. A flush holds at most maxBytes, less than one
// record batch, so each partition's records in it are one batch in one
// produce request: the broker appends it or refuses it whole. Nothing is
// produced on this client during a flush, so no record of a run can be
// sent after an earlier one failed, and no request is pipelined behind
// another to the same partition. Runs waiting while a flush is out go
// together in the next one.
//
// That holds only if every record of a flush is in its partition's buffer
// before the flush begins. A record for a topic whose partitions the
// client has not loaded yet waits aside and is put in its partition when
// the metadata comes; during a flush the client sends what each partition
// holds at once, so a run put there record by record would go in several
// requests, pipelined, and a later one could be appended after an earlier
// one was refused. So a flush begins only once the client has placed, or
// failed, every one of its records (the placement hook).
type runFlusher struct {
	client   *kgo.Client
	maxBytes int
	placing  placement

	mu     sync.Mutex
	queue  []*runReq
	wake   chan struct{}
	stop   chan struct{}
	exited chan struct{}
	once   sync.Once
}

type runReq struct {
	recs  []*kgo.Record
	waits []*pending
	ids   []outbox.Message
	bytes int
}

// newRunFlusher makes a flusher for a client still to be made with the
// flusher among its hooks (see OnProduceRecordPartitioned).
func newRunFlusher(maxBytes int) *runFlusher {
	return &runFlusher{maxBytes: maxBytes, wake: make(chan struct{}, 1),
		stop: make(chan struct{}), exited: make(chan struct{}),
		placing: placement{changed: make(chan struct{}, 1)}}
}

// placement follows, while a flush is being prepared, which of its records
// the client has put in a partition's buffer and which it failed before
// that.
type placement struct {
	mu      sync.Mutex
	open    bool
	waiting bool
	placed  []*kgo.Record
	failed  []*kgo.Record
	changed chan struct{}
	// Once a record failed: the records counted in settled, and how much
	// of each list they hold.
	settled            map[*kgo.Record]struct{}
	inPlaced, inFailed int
}

var _ kgo.HookProduceRecordPartitioned = (*runFlusher)(nil)

// OnProduceRecordPartitioned implements kgo.HookProduceRecordPartitioned:
// r is in its partition's buffer.
func (f *runFlusher) OnProduceRecordPartitioned(r *kgo.Record, _ int32) {
	f.placing.note(&f.placing.placed, r)
}

func (pl *placement) note(list *[]*kgo.Record, r *kgo.Record) {
	pl.mu.Lock()
	if pl.open {
		*list = append(*list, r)
	}
	tell := pl.waiting
	pl.mu.Unlock()
	if tell {
		select {
		case pl.changed <- struct{}{}:
		default:
		}
	}
}

func (pl *placement) begin() {
	pl.mu.Lock()
	clear(pl.placed)
	clear(pl.failed)
	pl.placed, pl.failed, pl.open = pl.placed[:0], pl.failed[:0], true
	pl.settled, pl.inPlaced, pl.inFailed = nil, 0, 0
	pl.mu.Unlock()
	select {
	case <-pl.changed:
	default:
	}
}

// wait returns once each of the n records produced since begin is placed
// or failed. It needs no way out: closing the client fails every record
// not placed.
func (pl *placement) wait(n int) {
	for {
		pl.mu.Lock()
		done := len(pl.placed) >= n || pl.settledLocked() >= n
		pl.open, pl.waiting = !done, !done
		pl.mu.Unlock()
		if done {
			return
		}
		<-pl.changed
	}
}

// settledLocked counts the records placed or failed: a record can be
// both (placed, then failed with its partition), so it is counted once.
func (pl *placement) settledLocked() int {
	if len(pl.failed) == 0 {
		return len(pl.placed)
	}
	if pl.settled == nil {
		pl.settled = make(map[*kgo.Record]struct{}, len(pl.placed)+len(pl.failed))
	}
	for _, r := range pl.placed[pl.inPlaced:] {
		pl.settled[r] = struct{}{}
	}
	for _, r := range pl.failed[pl.inFailed:] {
		pl.settled[r] = struct{}{}
	}
	pl.inPlaced, pl.inFailed = len(pl.placed), len(pl.failed)
	return len(pl.settled)
}

// publish sends msgs as one run and waits for them in order, as
// PublishBatch does; none of them has a record with a client yet.
func (f *runFlusher) publish(ctx context.Context, p *Publisher, msgs []outbox.Message) (int, error) {
	req := &runReq{recs: make([]*kgo.Record, len(msgs)), waits: make([]*pending, len(msgs)), ids: msgs, bytes: p.runBytes(msgs)}
	p.mu.Lock()
	for i, m := range msgs {
		topic, _ := p.router.Topic(m) // alone() checked it
		req.recs[i] = Record(m, topic)
		w := &pending{done: make(chan struct{})}
		p.inflight[m.ID] = w
		req.waits[i] = w
	}
	p.mu.Unlock()
	f.mu.Lock()
	f.queue = append(f.queue, req)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
	for i, w := range req.waits {
		err := p.wait(ctx, w)
		if err == nil {
			continue
		}
		p.abandon(req.waits[i+1:]...)
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			p.seenTopics.Delete(req.recs[i].Topic)
		}
		return i, Classify(fmt.Errorf("kafka: publish %s to %s: %w", msgs[i].ID, req.recs[i].Topic, err))
	}
	return len(msgs), nil
}

// serve flushes queued runs until closed.
func (f *runFlusher) serve(p *Publisher) {
	defer close(f.exited)
	for {
		select {
		case <-f.stop:
			f.failQueued(p, errClosed)
			return
		case <-f.wake:
		}
		for !f.stopping() {
			batch := f.take()
			if len(batch) == 0 {
				break
			}
			f.placing.begin()
			n := 0
			for _, req := range batch {
				for i, rec := range req.recs {
					w, id := req.waits[i], req.ids[i].ID
					f.client.Produce(context.Background(), rec, func(r *kgo.Record, err error) {
						if err != nil {
							f.placing.note(&f.placing.failed, r)
						}
						p.settle(id, w, r, err)
					})
					n++
				}
			}
			f.placing.wait(n)
			f.flush()
		}
	}
}

func (f *runFlusher) stopping() bool {
	select {
	case <-f.stop:
		return true
	default:
		return false
	}
}

// flush returns once every record produced is settled: acknowledged, or
// failed by the client (its retry limit, or Close).
//
// A flush is begun again after a while, and again, until it ends. When the
// client's metadata update places records of a topic it has just learned,
// it makes the topic's partitions visible only after placing them; Flush
// drains the partitions it sees when it begins, so one begun in between
// drains none of those records and waits for ever.
func (f *runFlusher) flush() {
	for after := reflushFirst; ; after = min(2*after, reflushMax) {
		ctx, cancel := context.WithTimeout(context.Background(), after)
		err := f.client.Flush(ctx)
		cancel()
		if err == nil {
			return
		}
	}
}

// A flush not ended after reflushFirst is begun again, then after twice as
// long, up to every reflushMax.
const (
	reflushFirst = 10 * time.Millisecond
	reflushMax   = 250 * time.Millisecond
)

// take removes from the queue the runs the next flush holds: as many as
// fit maxBytes, at least one.
func (f *runFlusher) take() []*runReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, bytes := 0, 0
	for n < len(f.queue) && (n == 0 || bytes+f.queue[n].bytes <= f.maxBytes) {
		bytes += f.queue[n].bytes
		n++
	}
	batch := f.queue[:n:n]
	f.queue = f.queue[n:]
	return batch
}

func (f *runFlusher) failQueued(p *Publisher, err error) {
	f.mu.Lock()
	queued := f.queue
	f.queue = nil
	f.mu.Unlock()
	for _, req := range queued {
		for i, w := range req.waits {
			p.settle(req.ids[i].ID, w, nil, err)
		}
	}
}

func (f *runFlusher) close() {
	f.once.Do(func() { close(f.stop) })
}

var errClosed = errors.New("kafka: publisher closed")
