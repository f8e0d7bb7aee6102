package kafka

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// reachability follows the client's connection attempts, so an outage is
// seen when it starts, not when a publish finally fails. A broker killed
// hard leaves the idempotent producer's requests unanswered, and those
// cannot be failed (the broker may have written them): publishes just
// wait, and without this nothing would show the outage until the broker
// came back.
//
// The cluster is unreachable when the latest connection attempt to every
// broker the client has dialled failed; one successful connection makes
// it reachable again. While unreachable, a prober asks for metadata every
// probeInterval, because with every publish waiting nothing else would
// dial and notice the broker's return.
type reachability struct {
	ping          func(context.Context) error
	probeInterval time.Duration

	mu      sync.Mutex
	brokers map[string]error // address -> the last attempt's error (nil: connected)
	// saslFailed holds addresses whose connection failed while
	// authenticating: a broker may refuse bad credentials by closing it.
	saslFailed map[string]bool
	down       error // non-nil while unreachable
	watchers   map[int]func(error)
	nextID     int
	probing    bool
	closed     chan struct{}

	notifyMu sync.Mutex // keeps notifications in the order of the changes
}

var (
	_ kgo.HookBrokerConnect = (*reachability)(nil)
	_ kgo.HookBrokerRead    = (*reachability)(nil)
)

func newReachability(probeInterval time.Duration) *reachability {
	return &reachability{
		probeInterval: probeInterval,
		brokers:       map[string]error{},
		saslFailed:    map[string]bool{},
		watchers:      map[int]func(error){},
		closed:        make(chan struct{}),
	}
}

// OnBrokerConnect implements kgo.HookBrokerConnect.
func (r *reachability) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	addr := net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port)))
	r.mu.Lock()
	if err != nil && r.saslFailed[addr] {
		err = fmt.Errorf("%w: SASL authentication failed (check the SASL user and password): %w", ErrAuthorization, err)
	}
	delete(r.saslFailed, addr)
	r.brokers[addr] = err
	was := r.down
	if err == nil {
		r.down = nil
	} else if r.down == nil && r.allDownLocked() {
		r.down = fmt.Errorf("kafka: no broker answers: %s: %w", addr, err)
	}
	now := r.down
	startProbe := now != nil && !r.probing
	if startProbe {
		r.probing = true
	}
	r.mu.Unlock()
	if (was == nil) != (now == nil) {
		r.notify(now)
	}
	if startProbe {
		go r.probe()
	}
}

// OnBrokerRead implements kgo.HookBrokerRead: it notes a connection that
// failed while authenticating, which OnBrokerConnect then reports as the
// broker refusing the relay (ErrAuthorization), not as an outage.
func (r *reachability) OnBrokerRead(meta kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err == nil || (kmsg.Key(key) != kmsg.SASLHandshake && kmsg.Key(key) != kmsg.SASLAuthenticate) {
		return
	}
	r.mu.Lock()
	r.saslFailed[net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port)))] = true
	r.mu.Unlock()
}

func (r *reachability) allDownLocked() bool {
	for _, err := range r.brokers {
		if err == nil {
			return false
		}
	}
	return len(r.brokers) > 0
}

func (r *reachability) notify(err error) {
	r.notifyMu.Lock()
	defer r.notifyMu.Unlock()
	r.mu.Lock()
	if (r.down == nil) != (err == nil) { // a later change already superseded this one
		r.mu.Unlock()
		return
	}
	fns := make([]func(error), 0, len(r.watchers))
	for _, fn := range r.watchers {
		fns = append(fns, fn)
	}
	r.mu.Unlock()
	for _, fn := range fns {
		fn(err)
	}
}

// probe asks for metadata until a broker answers or the client closes;
// the answer itself arrives through OnBrokerConnect.
func (r *reachability) probe() {
	t := time.NewTicker(r.probeInterval)
	defer t.Stop()
	for {
		select {
		case <-r.closed:
			return
		case <-t.C:
		}
		r.mu.Lock()
		down := r.down != nil
		if !down {
			r.probing = false
		}
		r.mu.Unlock()
		if !down {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.probeInterval*4)
		_ = r.ping(ctx)
		cancel()
	}
}

// watch calls fn with the current state, then on every change.
func (r *reachability) watch(fn func(error)) (stop func()) {
	r.notifyMu.Lock()
	r.mu.Lock()
	id := r.nextID
	r.nextID++
	r.watchers[id] = fn
	cur := r.down
	r.mu.Unlock()
	fn(cur)
	r.notifyMu.Unlock()
	return func() {
		r.mu.Lock()
		delete(r.watchers, id)
		r.mu.Unlock()
	}
}

// err is the current outage, or nil.
func (r *reachability) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.down
}

func (r *reachability) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.closed:
	default:
		close(r.closed)
	}
}
