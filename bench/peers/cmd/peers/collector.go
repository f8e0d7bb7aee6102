package main

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// collector consumes a run's target topic from its first offset (franz-go,
// no consumer group) and keeps what the judgement needs: which events
// arrived and how often, per-aggregate order, and commit → consumed
// latency.
type collector struct {
	cl     *kgo.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu          sync.Mutex
	seen        []uint16 // deliveries per event index
	maxSeq      map[int]int64
	latMS       []float64 // first deliveries only
	dups        int
	outOfOrder  int
	phantoms    int // records whose index is outside the run
	undecodable int
	firstAt     time.Time
	lastAt      time.Time
	fetchErrs   []string

	unique       atomic.Int64
	sentinels    atomic.Int64 // warm-up records consumed
	sentinel     chan struct{}
	sentinelOnce sync.Once
}

func newCollector(brokers []string, topic string, n int) (*collector, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{cl: cl, cancel: cancel, done: make(chan struct{}), seen: make([]uint16, n),
		maxSeq: map[int]int64{}, sentinel: make(chan struct{})}
	go c.loop(ctx)
	return c, nil
}

func (c *collector) loop(ctx context.Context) {
	defer close(c.done)
	for {
		fs := c.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		fs.EachError(func(t string, p int32, err error) {
			c.mu.Lock()
			if len(c.fetchErrs) < 20 {
				c.fetchErrs = append(c.fetchErrs, t+": "+err.Error())
			}
			c.mu.Unlock()
		})
		fs.EachRecord(func(rec *kgo.Record) { c.record(now, rec.Value) })
	}
}

func (c *collector) record(now time.Time, value []byte) {
	var p payload
	if err := json.Unmarshal(value, &p); err != nil {
		// Debezium without payload expansion may hand over the JSON as a
		// JSON string; accept that too.
		var s string
		if json.Unmarshal(value, &s) != nil || json.Unmarshal([]byte(s), &p) != nil {
			c.mu.Lock()
			c.undecodable++
			c.mu.Unlock()
			return
		}
	}
	if p.W == 1 {
		c.sentinels.Add(1)
		c.sentinelOnce.Do(func() { close(c.sentinel) })
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p.K < 0 || p.K >= len(c.seen) {
		c.phantoms++
		return
	}
	c.seen[p.K]++
	if c.seen[p.K] > 1 {
		c.dups++
		return
	}
	if p.S < c.maxSeq[p.A] {
		c.outOfOrder++
	} else {
		c.maxSeq[p.A] = p.S
	}
	c.latMS = append(c.latMS, float64(now.UnixNano()-p.T)/1e6)
	if c.firstAt.IsZero() {
		c.firstAt = now
	}
	c.lastAt = now
	c.unique.Add(1)
}

// waitSentinel waits for a warm-up sentinel to arrive.
func (c *collector) waitSentinel(ctx context.Context, d time.Duration) bool {
	select {
	case <-c.sentinel:
		return true
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return false
	}
}

type collected struct {
	unique, dups, outOfOrder, phantoms, undecodable int
	missing                                         []int
	firstAt, lastAt                                 time.Time
	latMS                                           []float64
	fetchErrs                                       string
}

// snapshot reports on the committed events: committed[k] says whether
// event k committed; nil means all of them did.
func (c *collector) snapshot(committed []bool) collected {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := collected{unique: int(c.unique.Load()), dups: c.dups, outOfOrder: c.outOfOrder, phantoms: c.phantoms,
		undecodable: c.undecodable, firstAt: c.firstAt, lastAt: c.lastAt, latMS: append([]float64(nil), c.latMS...),
		fetchErrs: strings.Join(c.fetchErrs, "; ")}
	for k := range c.seen {
		if c.seen[k] == 0 && (committed == nil || committed[k]) {
			out.missing = append(out.missing, k)
		}
	}
	return out
}

func (c *collector) close() {
	c.cancel()
	<-c.done
	c.cl.Close()
}
