package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"

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
type runFlusher struct {
	client   *kgo.Client
	maxBytes int

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

func newRunFlusher(client *kgo.Client, maxBytes int) *runFlusher {
	f := &runFlusher{client: client, maxBytes: maxBytes, wake: make(chan struct{}, 1),
		stop: make(chan struct{}), exited: make(chan struct{})}
	return f
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
		for {
			batch := f.take()
			if len(batch) == 0 {
				break
			}
			for _, req := range batch {
				for i, rec := range req.recs {
					w, id := req.waits[i], req.ids[i].ID
					f.client.Produce(context.Background(), rec, func(r *kgo.Record, err error) { p.settle(id, w, r, err) })
				}
			}
			// Every record ends before Flush returns: acknowledged, or
			// failed by the client (its retry limit, or Close).
			_ = f.client.Flush(context.Background())
		}
	}
}

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
