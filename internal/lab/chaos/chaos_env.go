package chaos

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/gocql/gocql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-dev/outbox/checker"
	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/internal/lab/labstore"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
	"github.com/outbox-dev/outbox/order"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/retry"
	"github.com/outbox-dev/outbox/store/scylla"
)

// chaosTarget is the store and broker a chaos run works against.
type chaosTarget struct {
	name string // "sqlite+kfake", "postgres+kafka", "postgres-poll+kafka" or "scylla+kafka"
	// pgDSN and brokers are set for PostgreSQL + Apache Kafka.
	pgDSN    string
	pgCtl    string // script taking stop-immediate|start, for R6
	kafkaCtl string // script taking kill|start, for R12
	source   string // "" (the store's default) or "poll"
	brokers  []string
	// scylla (hosts) and brokers are set for ScyllaDB CDC + Apache Kafka;
	// cassandraCtl takes kill|start for the node under the emulation (R6).
	scylla       string
	cassandraCtl string
}

func (t chaosTarget) embedded() bool { return t.pgDSN == "" && t.scylla == "" }

// isScylla: ScyllaDB CDC (in CI, the emulation: Cassandra, a CDC-log
// trigger and a CQL proxy, read by the real driver and scylla-cdc-go).
func (t chaosTarget) isScylla() bool { return t.scylla != "" }

// chaosRun is one scenario's world: a fresh store, a broker (the
// in-process one behind a TCP proxy, or Apache Kafka), fresh topics, and
// the real binary as child processes.
type chaosRun struct {
	ctx    context.Context
	target chaosTarget
	name   string
	id     string
	exe    string
	dir    string
	rng    *rand.Rand
	quick  bool
	logOut io.Writer

	store    string // URL
	slot     string
	pgDB     string
	keyspace string      // ScyllaDB: the run's own, dropped by Close
	cluster  string      // ScyllaDB: "emulation" or "ScyllaDB" (see scyllaCluster)
	db       app.Backend // the run's own connection, for writes and checks
	broker   *kafka.Embedded
	direct   string // kfake's own address, behind the proxy
	proxy    *toxiproxy.Proxy
	dialer   func(ctx context.Context, network, addr string) (net.Conn, error)
	brokers  []string // what the relay dials
	topicTpl string

	faults brokerFaults

	// from marks where every topic on the broker ended when the run
	// began: everything published since is read back, wherever it went.
	from kafkatest.Offsets
	// expectDead says which events the scenario expects in the
	// dead-letter store (its poison); nil: none.
	expectDead func(id string) bool

	mu    sync.Mutex
	acked []ackedWrite // writes the store acknowledged
	kids  []*child
}

type ackedWrite struct {
	order    string
	sequence int64
}

// brokerFaults are switched on and off by scenarios; one kfake control
// function consults them for every produce request.
type brokerFaults struct {
	down     atomic.Bool  // answer NOT_ENOUGH_REPLICAS (retryable)
	loseAcks atomic.Int64 // apply this many produce requests but drop the reply
	lost     atomic.Int64
	inFlight atomic.Bool // forwarding a request whose ack will be lost
	produces atomic.Int64
	rng      *rand.Rand
	rngMu    sync.Mutex
	loseProb float64
}

func newChaosRun(ctx context.Context, target chaosTarget, name, exe string, seed uint64, quick bool, logOut io.Writer) (*chaosRun, error) {
	dir, err := os.MkdirTemp("", "outbox-chaos-")
	if err != nil {
		return nil, err
	}
	r := &chaosRun{ctx: ctx, target: target, name: name, exe: exe, dir: dir, quick: quick, logOut: logOut,
		rng: rand.New(rand.NewPCG(seed, 0x0b0c)),
		id:  fmt.Sprintf("%s_%d_%d", strings.ToLower(name), time.Now().Unix()%100000, os.Getpid()%1000)}
	r.faults.rng = rand.New(rand.NewPCG(seed, 0xacc))
	r.topicTpl = "chaos-" + strings.ReplaceAll(r.id, "_", "-") + "-{aggregatetype}"
	if err := r.setup(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *chaosRun) setup() error {
	switch {
	case r.target.embedded():
		r.store = "sqlite://" + filepath.Join(r.dir, "outbox.db")
		if err := r.startBroker(); err != nil {
			return err
		}
	case r.target.isScylla():
		// A keyspace per scenario, created by migrate through the hosts
		// given (on the emulation, its proxy completes the outbox table's
		// WITH cdc). rf=1: one node. The low-latency profile (a 2 s
		// confidence window) and a 2 s lease keep takeovers short.
		r.keyspace = "chaos_" + r.id
		r.store = "scylla://" + r.target.scylla + "/" + r.keyspace + "?rf=1&profile=low-latency&lease_ttl=2s"
		r.brokers = r.target.brokers
		if err := r.proxyRealBroker(); err != nil {
			return err
		}
	default:
		r.pgDB, r.slot = "chaos_"+r.id, "chaos_"+r.id
		admin, err := pgx.Connect(r.ctx, r.target.pgDSN)
		if err != nil {
			return fmt.Errorf("chaos: connect to PostgreSQL: %w", err)
		}
		defer admin.Close(r.ctx)
		if _, err := admin.Exec(r.ctx, "CREATE DATABASE "+r.pgDB); err != nil {
			return fmt.Errorf("chaos: create database: %w", err)
		}
		u, _ := url.Parse(r.target.pgDSN)
		u.Path = "/" + r.pgDB
		r.store = u.String()
		r.brokers = r.target.brokers
		if err := r.proxyRealBroker(); err != nil {
			return err
		}
	}
	cfg := r.config()
	// app.Open sets up the source too: on PostgreSQL CDC the slot exists
	// before any write (what `outbox migrate` does).
	db, err := app.Open(r.ctx, cfg, discardLogger())
	if err != nil {
		return err
	}
	r.db = db
	if r.from, err = kafkatest.EndOffsets(r.ctx, r.brokers); err != nil {
		return fmt.Errorf("chaos: mark the topics' ends: %w", err)
	}
	if sb, ok := db.(scyllaDB); ok {
		if r.cluster, err = scyllaCluster(r.ctx, sb); err != nil {
			return err
		}
	}
	return nil
}

// startBroker starts kfake behind a toxiproxy proxy. kfake advertises
// the proxy's address, so every connection a client makes, including
// those to brokers it learns from metadata, crosses the proxy.
func (r *chaosRun) startBroker() error {
	// The broker's listener is bound first and handed to kfake, so no
	// other process can take its port between choosing and binding it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	r.direct = ln.Addr().String()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	r.proxy = toxiproxy.NewProxy(srv, "kafka", "127.0.0.1:0", r.direct)
	if err := r.proxy.Start(); err != nil {
		ln.Close()
		return fmt.Errorf("chaos: proxy: %w", err)
	}
	advertised := r.proxy.Listen
	r.broker, err = kafka.StartEmbedded(kafka.EmbeddedConfig{Opts: []kfake.Opt{
		kfake.ListenFn(func(string, string) (net.Listener, error) {
			return advertisingListener{ln, advertised}, nil
		}),
	}})
	if err != nil {
		ln.Close()
		return err
	}
	r.brokers = []string{advertised}
	r.installFaults()
	return nil
}

// proxyRealBroker puts toxiproxy in front of Apache Kafka. The broker
// advertises its own address, so in-process relays get a dialer that
// sends that address to the proxy (one broker, as the test cluster has).
func (r *chaosRun) proxyRealBroker() error {
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	r.proxy = toxiproxy.NewProxy(srv, "kafka", "127.0.0.1:0", r.target.brokers[0])
	if err := r.proxy.Start(); err != nil {
		return fmt.Errorf("chaos: proxy: %w", err)
	}
	real, via := r.target.brokers[0], r.proxy.Listen
	r.dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == real {
			addr = via
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return nil
}

// kafkaOpts are the in-process relay's client options: through the proxy.
func (r *chaosRun) kafkaOpts() []kgo.Opt {
	if r.dialer == nil {
		return nil // kfake already advertises the proxy
	}
	return []kgo.Opt{kgo.Dialer(r.dialer)}
}

// setBrokerDown cuts the relay off the broker or restores it: in kfake by
// failing produce requests (NOT_ENOUGH_REPLICAS), in front of Apache
// Kafka by a toxic that drops every byte and closes connections.
func (r *chaosRun) setBrokerDown(down bool) error {
	if r.target.embedded() {
		r.faults.down.Store(down)
		return nil
	}
	if down {
		_, err := r.proxy.Toxics.AddToxicJson(strings.NewReader(`{"name": "down", "type": "timeout", "stream": "upstream", "toxicity": 1, "attributes": {"timeout": 100}}`))
		return err
	}
	return r.proxy.Toxics.RemoveToxic(r.ctx, "down")
}

type advertisingListener struct {
	net.Listener
	addr string
}

func (l advertisingListener) Addr() net.Addr {
	a, _ := net.ResolveTCPAddr("tcp", l.addr)
	return a
}

// installFaults adds the one produce control function the scenarios
// steer through r.faults.
func (r *chaosRun) installFaults() {
	cl := r.broker.Cluster()
	// The forwarding client must reach kfake itself: its metadata names
	// the proxy, so it is pinned to the one broker it was given.
	fwd, _ := kgo.NewClient(kgo.SeedBrokers(r.direct), kgo.Dialer(func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, r.direct)
	}))
	cl.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cl.KeepControl()
		f := &r.faults
		if f.inFlight.Load() {
			return nil, nil, false // the forwarded copy, or traffic meanwhile
		}
		f.produces.Add(1)
		if f.down.Load() {
			return kafkatest.FailProduce(req, kerr.NotEnoughReplicas.Code), nil, true
		}
		if f.loseAcks.Load() > 0 && f.chance() {
			f.loseAcks.Add(-1)
			f.inFlight.Store(true)
			var ferr error
			cl.SleepControl(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, ferr = fwd.Request(ctx, req)
			})
			f.inFlight.Store(false)
			if ferr == nil {
				f.lost.Add(1)
			}
			// The broker applied the write; closing the connection is the
			// reply the producer never hears.
			return nil, errors.New("chaos: acknowledgement lost"), true
		}
		return nil, nil, false
	})
	go func() { <-r.ctx.Done(); fwd.Close() }()
}

func (f *brokerFaults) chance() bool {
	f.rngMu.Lock()
	defer f.rngMu.Unlock()
	return f.rng.Float64() < f.loseProb
}

func (r *chaosRun) config() app.Config {
	return app.Config{
		Store: r.store, Source: r.target.source, Slot: r.slot, Retention: 0,
		Brokers: strings.Join(r.brokers, ","), HTTP: "127.0.0.1:0", TopicTemplate: r.topicTpl,
		PollInterval: 10 * time.Millisecond, BreakerTimeout: r.breakerTimeout(), OrderWorkers: 4,
		LogLevel: "warn", LogFormat: "text", StuckTimeout: 5 * time.Minute, IdempotencyTTL: 24 * time.Hour,
	}
}

func (r *chaosRun) breakerTimeout() time.Duration {
	if r.quick {
		return 2 * time.Second
	}
	return 30 * time.Second
}

// scyllaCluster says what the scylla:// hosts are: the ScyllaDB CDC
// emulation of the test services (Apache Cassandra with a CDC-log trigger
// behind a CQL proxy, its metadata in the keyspace scyllaemu; see
// DESIGN.md), whose figures are not a ScyllaDB cluster's, or ScyllaDB.
func scyllaCluster(ctx context.Context, b scyllaDB) (string, error) {
	var n int
	if err := b.Session().Query(`SELECT count(*) FROM system_schema.keyspaces WHERE keyspace_name = 'scyllaemu'`).WithContext(ctx).Scan(&n); err != nil {
		return "", fmt.Errorf("chaos: look for the ScyllaDB emulation: %w", err)
	}
	if n > 0 {
		return "emulation", nil
	}
	return "ScyllaDB", nil
}

// dropKeyspace drops the run's ScyllaDB keyspace through the hosts the
// run used (on the emulation, the proxy then forgets its cdc options).
func (r *chaosRun) dropKeyspace() {
	if r.keyspace == "" {
		return
	}
	sb, _ := r.db.(scyllaDB)
	if sb == nil {
		st, err := scylla.ParseURL(r.store)
		var s *scylla.Store
		if err == nil {
			st.Config.Logger = discardLogger()
			s, err = scylla.Open(st.Config)
		}
		if err != nil {
			fmt.Fprintf(r.logOut, "chaos: keyspace %s not dropped: %v\n", r.keyspace, err)
			return
		}
		defer s.Close()
		sb = s
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sb.Session().Query("DROP KEYSPACE IF EXISTS " + r.keyspace).WithContext(ctx).Exec(); err != nil {
		fmt.Fprintf(r.logOut, "chaos: keyspace %s not dropped: %v\n", r.keyspace, err)
	}
}

// Close stops children, brokers and stores, and drops the run's database.
func (r *chaosRun) Close() {
	r.mu.Lock()
	kids := slices.Clone(r.kids)
	r.mu.Unlock()
	for _, k := range kids {
		k.kill()
	}
	r.dropKeyspace()
	if r.db != nil {
		r.db.Close()
	}
	if r.broker != nil {
		r.broker.Close()
	}
	if r.proxy != nil {
		r.proxy.Stop()
	}
	if r.pgDB != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if admin, err := pgx.Connect(ctx, r.target.pgDSN); err == nil {
			admin.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active`, r.pgDB)
			admin.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, r.pgDB)
			admin.Exec(ctx, "DROP DATABASE IF EXISTS "+r.pgDB+" WITH (FORCE)")
			admin.Close(ctx)
		}
	}
	os.RemoveAll(r.dir)
}

// child is the real binary running one subcommand.
type child struct {
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
	output *cappedBuffer
	http   string
}

type cappedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() < 1<<20 {
		b.buf.Write(p)
	}
	return len(p), nil
}

func (b *cappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startChild runs `outbox sub` on the run's store and brokers.
func (r *chaosRun) startChild(sub string, extra ...string) (*child, error) {
	args := []string{sub, "--store", r.store, "--brokers", strings.Join(r.brokers, ","), "--topic-template", r.topicTpl,
		"--poll-interval", "10ms", "--breaker-open-timeout", r.breakerTimeout().String(), "--log-level", "warn"}
	if r.slot != "" {
		args = append(args, "--slot", r.slot, "--retention", "0")
	}
	if r.target.source != "" {
		args = append(args, "--source", r.target.source)
	}
	c := &child{done: make(chan struct{}), output: &cappedBuffer{}}
	if sub == "serve" {
		// Any free port, bound by the child itself; its log says which.
		args = append(args, "--http", "127.0.0.1:0", "--log-level", "info")
	}
	c.cmd = exec.Command(r.exe, append(args, extra...)...)
	c.cmd.Env = chaosChildEnv()
	c.cmd.Stdout, c.cmd.Stderr = c.output, c.output
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { c.err = c.cmd.Wait(); close(c.done) }()
	r.mu.Lock()
	r.kids = append(r.kids, c)
	r.mu.Unlock()
	if sub == "serve" {
		if err := c.waitReady(r.ctx, 30*time.Second); err != nil {
			c.kill()
			return nil, fmt.Errorf("%w; output:\n%s", err, c.output)
		}
	}
	return c, nil
}

// chaosChildEnv keeps OUTBOX_* settings of the caller away from the
// children, whose flags say everything.
func chaosChildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OUTBOX_") {
			env = append(env, kv)
		}
	}
	return env
}

// listenAddr finds the address a log line says was bound ("... addr=HOST:PORT").
func listenAddr(log, msg string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, msg) {
			if _, rest, ok := strings.Cut(l, "addr="); ok {
				return strings.Fields(rest)[0]
			}
		}
	}
	return ""
}

func (c *child) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			return fmt.Errorf("chaos: child exited before it was ready: %v", c.err)
		default:
		}
		if c.http == "" {
			c.http = listenAddr(c.output.String(), "HTTP API listening")
			if c.http == "" {
				if retry.Wait(ctx, 20*time.Millisecond) != nil {
					return ctx.Err()
				}
				continue
			}
		}
		resp, err := http.Get("http://" + c.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if retry.Wait(ctx, 20*time.Millisecond) != nil {
			return ctx.Err()
		}
	}
	return fmt.Errorf("chaos: child not ready after %s", timeout)
}

func (c *child) kill() {
	if c.cmd.Process != nil {
		c.cmd.Process.Kill()
	}
	<-c.done
}

// stop asks the child to shut down and waits for it.
func (c *child) stop() error {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return c.err
	case <-time.After(15 * time.Second):
		c.kill()
		return errors.New("chaos: child ignored SIGTERM for 15 s")
	}
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// writeOrders writes events order by order: aggregates orders, each
// created and then updated until it has perAgg events, by writers
// goroutines each owning a share of the orders. Acknowledged writes are
// remembered; failed ones are retried after pause. stop ends the writers
// between writes, with stop's error: a write in flight runs on the run's
// context and finishes (on ScyllaDB an order write cancelled midway may
// have applied with its event left for the sweeper, 30 s or more later).
func (r *chaosRun) writeOrders(stop context.Context, aggregates, perAgg, writers int, pace time.Duration) error {
	svc := order.NewService(r.db.Orders())
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for a := w; a < aggregates; a += writers {
				if err := r.writeOne(stop, svc, a, perAgg, pace); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (r *chaosRun) writeOne(stop context.Context, svc *order.Service, a, perAgg int, pace time.Duration) error {
	ctx := r.ctx
	items := []order.Item{{SKU: fmt.Sprintf("sku-%d", a), Quantity: 1, UnitPrice: 100}}
	var o order.Order
	for {
		if err := stop.Err(); err != nil {
			return err
		}
		var err error
		if o, _, err = svc.Create(ctx, order.CreateInput{CustomerID: fmt.Sprintf("c%d", a), Currency: "EUR", Items: items}, order.Meta{}); err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		retry.Wait(stop, 50*time.Millisecond) // the store is down: wait and retry
	}
	r.ack(o.ID, o.Version)
	for o.Version < int64(perAgg) {
		if pace > 0 {
			retry.Wait(stop, pace)
		}
		if err := stop.Err(); err != nil {
			return err
		}
		addr := fmt.Sprintf("street %d", o.Version)
		next, err := svc.Update(ctx, o.ID, order.UpdateInput{Address: &addr}, o.Version, order.Meta{})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// A failed commit may still have applied: re-read the version.
			if cur, gerr := svc.Get(ctx, o.ID); gerr == nil && cur.Version > o.Version {
				o = cur
				r.ack(o.ID, o.Version)
			}
			retry.Wait(stop, 50*time.Millisecond)
			continue
		}
		o = next
		r.ack(o.ID, o.Version)
	}
	return nil
}

func (r *chaosRun) ack(orderID string, seq int64) {
	r.mu.Lock()
	r.acked = append(r.acked, ackedWrite{orderID, seq})
	r.mu.Unlock()
}

// published counts the records published on the broker since the run
// began, on every topic.
func (r *chaosRun) published(ctx context.Context) (int64, error) {
	now, err := kafkatest.EndOffsets(ctx, r.brokers)
	if err != nil {
		return 0, err
	}
	var n int64
	for topic, parts := range now {
		for p, end := range parts {
			n += max(end-r.from[topic][p], 0)
		}
	}
	return n, nil
}

// settle waits until every committed event is on a topic or in the
// dead-letter store (or timeout), then checks the history.
func (r *chaosRun) settle(ctx context.Context, timeout time.Duration) (checker.Report, []checker.Observed, error) {
	deadline := time.Now().Add(timeout)
	for {
		committed, err := labstore.Committed(ctx, r.db)
		if err != nil {
			return checker.Report{}, nil, err
		}
		dead, err := r.deadLetters(ctx)
		if err != nil {
			return checker.Report{}, nil, err
		}
		n, err := r.published(ctx)
		if err == nil && n >= int64(len(committed)-len(dead)) || time.Now().After(deadline) {
			obs, err := r.observe(ctx)
			if err != nil {
				return checker.Report{}, nil, err
			}
			rep := checker.Verify(checker.Input{History: committed, Observed: obs, DeadLetters: dead, ExpectDead: r.expectDead})
			if rep.Lost == 0 || time.Now().After(deadline) {
				return rep, obs, nil
			}
		}
		if err := retry.Wait(ctx, 100*time.Millisecond); err != nil {
			return checker.Report{}, nil, err
		}
	}
}

// observe reads back every record published since the run began, on
// every topic of the broker: a record sent to a topic it should not go to
// is seen too.
func (r *chaosRun) observe(ctx context.Context) ([]checker.Observed, error) {
	recs, err := r.records(ctx)
	if err != nil {
		return nil, err
	}
	return checker.FromKafka(recs)
}

func (r *chaosRun) records(ctx context.Context) ([]kafkatest.Received, error) {
	return kafkatest.ReadFrom(ctx, r.brokers, r.from)
}

// deadLetters lists the dead-letter store, with each entry's status.
func (r *chaosRun) deadLetters(ctx context.Context) ([]checker.DeadLetter, error) {
	var out []checker.DeadLetter
	var after int64
	for {
		page, err := r.db.ListDeadLetters(ctx, outbox.DeadLetterFilter{AfterID: after, Limit: 500})
		if err != nil {
			return nil, err
		}
		for _, d := range page {
			out = append(out, checker.DeadLetter{ID: d.Message.ID.String(), Status: string(d.Status)})
			after = d.ID
		}
		if len(page) < 500 {
			return out, nil
		}
	}
}

// deadLettered lists the event ids in the dead-letter store.
func (r *chaosRun) deadLettered(ctx context.Context) ([]string, error) {
	dead, err := r.deadLetters(ctx)
	ids := make([]string, len(dead))
	for i, d := range dead {
		ids[i] = d.ID
	}
	return ids, err
}

// contents is a digest of every row of the tables a request may change
// (orders, outbox, idempotency keys, dead letters): a refused request
// must leave it as it was, not only the row counts.
func (r *chaosRun) contents(ctx context.Context) (string, error) {
	h := sha256.New()
	tables := []string{"orders ORDER BY id", "outbox ORDER BY position", "order_idempotency_keys ORDER BY key",
		"outbox_dead_letters ORDER BY id", "outbox_parked_aggregates ORDER BY aggregatetype, aggregateid"}
	switch db := r.db.(type) {
	case sqliteDB:
		for _, t := range tables {
			rows, err := db.DB().QueryContext(ctx, "SELECT * FROM "+t)
			if err != nil {
				return "", err
			}
			cols, _ := rows.Columns()
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			for rows.Next() {
				if err := rows.Scan(ptrs...); err != nil {
					rows.Close()
					return "", err
				}
				fmt.Fprintf(h, "%s %v\n", t, vals)
			}
			rows.Close()
		}
	case postgresDB:
		for _, t := range tables {
			rows, err := db.Pool().Query(ctx, "SELECT * FROM "+t)
			if err != nil {
				return "", err
			}
			for rows.Next() {
				vals, err := rows.Values()
				if err != nil {
					rows.Close()
					return "", err
				}
				fmt.Fprintf(h, "%s %v\n", t, vals)
			}
			rows.Close()
		}
	case scyllaDB:
		// Every table a request writes, notes included; not the relay's
		// (lease, progress) nor the sweeper's horizon.
		for _, t := range []string{"orders", "order_intents", "order_idempotency_keys", "outbox_messages", "dead_letter_queue",
			"parked_aggregates", "parked_dead_letters"} {
			iter := db.Session().Query("SELECT * FROM " + r.keyspace + "." + t).WithContext(ctx).PageSize(5000).Iter()
			for {
				row := map[string]any{}
				if !iter.MapScan(row) {
					break
				}
				fmt.Fprintf(h, "%s %v\n", t, row) // fmt sorts map keys
			}
			if err := iter.Close(); err != nil {
				return "", fmt.Errorf("chaos: read %s: %w", t, err)
			}
		}
	default:
		o, e, err := labstore.CountRows(ctx, r.db)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%d %d", o, e)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// waitPendingEvents waits, on ScyllaDB, until no order row holds a
// pending event. An order write interrupted after the order row's
// lightweight transaction (the writer stopped, or the outcome stayed
// unknown and the request was answered 503) leaves its event in the row,
// for the order's next update or the sweeper, which every 30 s finishes
// the notes older than 30 s: up to a minute. Every acknowledged write
// must have its event once the sweeper has run, so the run waits for it
// (90 s at most) before checking.
func (r *chaosRun) waitPendingEvents(res *scenarioResult) error {
	sb, ok := r.db.(scyllaDB)
	if !ok {
		return nil
	}
	start := time.Now()
	first := -1
	for {
		iter := sb.Session().Query("SELECT pending_event_id FROM " + r.keyspace + ".orders").WithContext(r.ctx).PageSize(5000).Iter()
		n := 0
		var id *gocql.UUID
		for iter.Scan(&id) {
			if id != nil {
				n++
			}
		}
		if err := iter.Close(); err != nil {
			return fmt.Errorf("chaos: read the orders' pending events: %w", err)
		}
		if first < 0 {
			first = n
		}
		if n == 0 {
			break
		}
		if time.Since(start) > 90*time.Second {
			res.fail("%d orders still hold a pending event %s after the writes: the sweeper did not finish them", n, time.Since(start).Round(time.Second))
			break
		}
		if err := retry.Wait(r.ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
	if first > 0 {
		res.Figures["pending_events_left_for_sweeper"] = first
		res.Figures["sweeper_finished_them_s"] = round(time.Since(start).Seconds())
	}
	return nil
}

// relayDups counts the copies the relay published beyond those the store
// logged. On ScyllaDB an order write whose outbox row was acknowledged
// later than EventWriteDeadline (half the confidence window: 1 s here),
// or not at all, is written again at a fresh timestamp, as the design
// has it: the CDC log then holds the event twice and it is published
// twice, with its id, whatever the relay does. Those copies are counted
// apart (logged); dup and extra (the most copies of one event past the
// log's) are the relay's, which crashes bound. Elsewhere the store holds
// each event once, and dup is the checker's.
func (r *chaosRun) relayDups(ctx context.Context, obs []checker.Observed) (dup, extra, logged int, err error) {
	var copies map[string]int // how many times the store logged each event
	if r.target.isScylla() {
		if copies, err = r.loggedCopies(ctx); err != nil {
			return 0, 0, 0, err
		}
	}
	published := map[string]int{}
	for _, o := range obs {
		published[o.ID]++
	}
	for id, n := range published {
		if have := max(copies[id], 1); n > have {
			dup += n - have
			extra = max(extra, n-have)
		}
	}
	for _, c := range copies {
		logged += max(c-1, 0)
	}
	return dup, extra, logged, nil
}

// loggedCopies counts each event's rows in the outbox table's CDC log.
func (r *chaosRun) loggedCopies(ctx context.Context) (map[string]int, error) {
	sb, ok := r.db.(scyllaDB)
	if !ok {
		return nil, nil
	}
	iter := sb.Session().Query(`SELECT id FROM ` + r.keyspace + `.outbox_messages_scylla_cdc_log BYPASS CACHE`).WithContext(ctx).PageSize(5000).Iter()
	copies := map[string]int{}
	var id *gocql.UUID
	for iter.Scan(&id) {
		if id != nil {
			copies[id.String()]++
		}
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("chaos: read the CDC log: %w", err)
	}
	return copies, nil
}

// ackedMissing counts acknowledged writes with no outbox row: a 2xx (or
// a returned commit) whose event the store does not hold.
func (r *chaosRun) ackedMissing(committed []checker.Event) int {
	have := map[string]bool{}
	for _, e := range committed {
		have[fmt.Sprintf("%s#%d", e.Aggregate, e.Sequence)] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	missing := 0
	for _, a := range r.acked {
		if !have[fmt.Sprintf("%s#%d", outbox.AggregateKey{Type: order.AggregateType, ID: a.order}, a.sequence)] {
			missing++
		}
	}
	return missing
}

// readModelMismatches rebuilds each order from its published events (the
// last version wins) and compares it with the store's row.
func (r *chaosRun) readModelMismatches(ctx context.Context) (int, error) {
	recs, err := r.records(ctx)
	if err != nil {
		return 0, err
	}
	latest := map[string]int64{}
	for _, rec := range recs {
		if rec.Headers[outbox.HeaderAggregateType] != order.AggregateType {
			continue
		}
		seq, err := rec.Sequence()
		if err != nil {
			return 0, err
		}
		id := rec.Headers[outbox.HeaderAggregateID]
		latest[id] = max(latest[id], seq)
	}
	svc := order.NewService(r.db.Orders())
	bad := 0
	for id, v := range latest {
		o, err := svc.Get(ctx, id)
		if err != nil || o.Version != v {
			bad++
		}
	}
	r.mu.Lock()
	orders := map[string]bool{}
	for _, a := range r.acked {
		orders[a.order] = true
	}
	r.mu.Unlock()
	for id := range orders {
		if _, ok := latest[id]; !ok {
			bad++
		}
	}
	return bad, nil
}

// The run's connection, by database: the handles the stores expose.
type (
	sqliteDB   interface{ DB() *sql.DB }
	postgresDB interface{ Pool() *pgxpool.Pool }
	scyllaDB   interface {
		Session() *gocql.Session
		CDCBacklog(ctx context.Context) (rows int64, oldest time.Time, err error)
	}
)

func round(f float64) float64 { return math.Round(f*10) / 10 }
