package kafka_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
)

// restartable runs a kfake cluster that can be killed (every connection
// dropped, new ones refused) and started again on the same port, as a
// broker process SIGKILLed and restarted.
type restartable struct {
	t    *testing.T
	port int
	c    *kfake.Cluster
	opts []kfake.Opt
}

func newRestartable(t *testing.T, opts ...kfake.Opt) *restartable {
	// On disk, so the restarted broker keeps its topics and their ids, as
	// a real one does.
	r := &restartable{t: t, opts: append([]kfake.Opt{kfake.DataDir(t.TempDir())}, opts...)}
	r.start()
	_, port, _ := net.SplitHostPort(r.c.ListenAddrs()[0])
	r.port, _ = strconv.Atoi(port)
	t.Cleanup(func() { r.kill() })
	return r
}

func (r *restartable) start() {
	opts := append([]kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.SeedTopics(1, "t")}, r.opts...)
	if r.port != 0 {
		opts = append(opts, kfake.Ports(r.port))
	}
	var err error
	// The port was ours a moment ago; another process taking it in
	// between would fail the test loudly, not wrongly.
	for range 50 {
		if r.c, err = kfake.NewCluster(opts...); err == nil {
			return
		}
		<-time.After(20 * time.Millisecond)
	}
	r.t.Fatalf("restart the broker on port %d: %v", r.port, err)
}

func (r *restartable) kill() {
	if r.c != nil {
		r.c.Close()
		r.c = nil
	}
}

func (r *restartable) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// A broker killed hard: the publisher reports it unreachable within
// moments (as a relay's breaker needs), and reachable again as soon as it
// accepts connections, though nothing else is being published.
func TestPublisherWatchesABrokerKilledHardAndItsReturn(t *testing.T) {
	b := newRestartable(t)
	p := publisher(t, []string{b.addr()}, kafka.Config{TopicTemplate: "t"})
	states := make(chan error, 16)
	stop := p.WatchBroker(func(err error) { states <- err })
	defer stop()
	if err := <-states; err != nil {
		t.Fatalf("initial state %v, want reachable", err)
	}
	if err := p.Publish(ctx(t), msg(t, "order", "o1", "OrderCreated", 1, 1)); err != nil {
		t.Fatal(err)
	}

	b.kill()
	killed := time.Now()
	// The next publish finds every connection refused, and waits.
	pctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go p.Publish(pctx, msg(t, "order", "o1", "OrderUpdated", 2, 2))
	select {
	case err := <-states:
		if err == nil {
			t.Fatal("reported reachable after the kill")
		}
		t.Logf("unreachable after %s: %v", time.Since(killed).Round(time.Millisecond), err)
	case <-time.After(2 * time.Second):
		t.Fatal("outage not reported within 2 s")
	}
	if err := p.Ping(ctx(t)); err == nil {
		t.Fatal("Ping answered nil while every broker refuses connections")
	}

	b.start()
	started := time.Now()
	select {
	case err := <-states:
		if err != nil {
			t.Fatalf("reported %v after the broker came back", err)
		}
		t.Logf("reachable %s after the restart", time.Since(started).Round(time.Millisecond))
	case <-time.After(2 * time.Second):
		t.Fatal("return not reported within 2 s of the broker answering")
	}
	m := msg(t, "order", "o1", "OrderUpdated", 2, 2)
	var perr error
	defer func() { t.Logf("last publish error: %v", perr) }()
	testenv.Eventually(t, 2*time.Second, "publish after the return", func() bool {
		perr = p.Publish(ctx(t), m)
		return perr == nil
	})
}

// An attempt that stops waiting (its deadline passed while the broker held
// the request) leaves the record with the client; the next attempt for
// the same event waits for that record instead of sending a copy.
func TestRepeatedPublishOfAnEventInFlightSendsNoCopy(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mu sync.Mutex
	hold := make(chan struct{})
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		h := hold
		mu.Unlock()
		<-h // the broker is slow to answer, then applies the request
		return nil, nil, false
	})
	p := publisher(t, c.ListenAddrs(), kafka.Config{TopicTemplate: "t"})
	m := msg(t, "order", "o1", "OrderCreated", 1, 1)
	short, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := p.Publish(short, m); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first attempt: %v, want its deadline", err)
	}
	second := make(chan error, 1)
	go func() { second <- p.Publish(ctx(t), m) }()
	close(hold)
	if err := <-second; err != nil {
		t.Fatalf("second attempt: %v", err)
	}
	// Later still, a record delivered after its publish gave up: an
	// attempt that comes after the delivery is told so, and sends nothing.
	mu.Lock()
	hold = make(chan struct{})
	mu.Unlock()
	m2 := msg(t, "order", "o1", "OrderUpdated", 2, 2)
	short2, cancel2 := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel2()
	if err := p.Publish(short2, m2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first attempt of the second event: %v, want its deadline", err)
	}
	mu.Lock()
	close(hold)
	mu.Unlock()
	testenv.Eventually(t, 10*time.Second, "the second event delivered", func() bool {
		recs, _ := kafkatest.ReadAll(ctx(t), c.ListenAddrs(), []string{"t"})
		return len(recs) == 2
	})
	if err := p.Publish(ctx(t), m2); err != nil {
		t.Fatalf("attempt after the delivery: %v", err)
	}
	recs, err := kafkatest.ReadAll(ctx(t), c.ListenAddrs(), []string{"t"})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Fatalf("%d records on the topic, want each of the two events once", len(recs))
	}
}
