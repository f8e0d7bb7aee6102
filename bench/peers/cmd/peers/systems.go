package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outbox-dev/outbox/bench/peers/internal/wm"
)

// aggregateType is every event's aggregate type; each system routes it to
// the run's topic, "<prefix>.order".
const aggregateType = "order"

// event is one outbox event of a run. K is its index in the run (-1 for a
// warm-up sentinel), Agg its aggregate, Seq its place in the aggregate.
type event struct {
	K   int
	Agg int
	Seq int64
}

func aggID(a int) string { return "agg-" + strconv.Itoa(a) }

// payload is what every system carries from the writer to Kafka: the event's
// identity, aggregate and sequence, and T, the writer's wall clock in
// nanoseconds taken in the transaction right before the event's insert
// (the commit follows at once). Pad brings it to the payload size.
type payload struct {
	K   int    `json:"k"`
	A   int    `json:"a"`
	S   int64  `json:"s"`
	T   int64  `json:"t"`
	W   int    `json:"w,omitempty"` // 1: warm-up sentinel, not counted
	Pad string `json:"pad"`
}

func makePayload(ev event, size int) []byte {
	p := payload{K: ev.K, A: ev.Agg, S: ev.Seq, T: time.Now().UnixNano()}
	if ev.K < 0 {
		p.W = 1
	}
	b, _ := json.Marshal(p)
	if n := size - len(b); n > 0 {
		p.Pad = strings.Repeat("x", n)
		b, _ = json.Marshal(p)
	}
	return b
}

// run is one (system, round, scenario): its database, topic and files.
type run struct {
	env    *env
	sys    system
	round  int
	sc     scenario
	db     string
	dsn    string
	prefix string // topic prefix; the target topic is prefix + ".order"
	topic  string
	slot   string
	dir    string // logs and offsets
	starts int
}

// system is one of the compared relays.
type system interface {
	Name() string
	// Setup prepares a fresh database (tables, slots, publications).
	Setup(ctx context.Context, r *run) error
	// Start starts the relay as its own OS process.
	Start(ctx context.Context, r *run) (*proc, error)
	// InsertBatch commits events in one transaction (backlog loading).
	InsertBatch(ctx context.Context, conn *pgx.Conn, r *run, evs []event) error
	// InsertOne commits one event in its own transaction.
	InsertOne(ctx context.Context, conn *pgx.Conn, r *run, ev event) error
	// Note describes the configuration for the report.
	Note() string
}

func newSystem(name string, o *options) (system, error) {
	switch name {
	case "outbox-cdc":
		return &outboxSys{o: o, source: "cdc"}, nil
	case "outbox-poll":
		return &outboxSys{o: o, source: "poll"}, nil
	case "outbox-cdc-linger5ms":
		return &outboxSys{o: o, source: "cdc", linger: 5 * time.Millisecond}, nil
	case "outbox-cdc-linger5ms-1cpu":
		return &outboxSys{o: o, source: "cdc", linger: 5 * time.Millisecond, oneCPU: true}, nil
	case "debezium":
		return &debeziumSys{o: o}, nil
	case "debezium-100ms":
		return &debeziumSys{o: o, pollInterval: 100 * time.Millisecond}, nil
	case "watermill":
		return &watermillSys{o: o}, nil
	case "watermill-100ms":
		return &watermillSys{o: o, pollInterval: 100 * time.Millisecond}, nil
	}
	return nil, fmt.Errorf("unknown system %q (outbox-cdc, outbox-poll, outbox-cdc-linger5ms, outbox-cdc-linger5ms-1cpu, debezium, watermill, debezium-100ms, watermill-100ms)", name)
}

// ---- our outbox table (outbox and Debezium) ----

var outboxColumns = []string{"id", "aggregatetype", "aggregateid", "type", "sequence", "payload", "timestamp"}

func outboxRow(ev event, size int) []any {
	return []any{uuid.New(), aggregateType, aggID(ev.Agg), "OrderChanged", ev.Seq, string(makePayload(ev, size)), time.Now()}
}

func outboxInsertBatch(ctx context.Context, conn *pgx.Conn, evs []event, size int) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	rows := make([][]any, len(evs))
	for i, ev := range evs {
		rows[i] = outboxRow(ev, size)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"outbox"}, outboxColumns, pgx.CopyFromRows(rows)); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func outboxInsertOne(ctx context.Context, conn *pgx.Conn, ev event, size int) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, sequence, payload, timestamp) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		outboxRow(ev, size)...); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// migrate creates our schema with our own binary, exactly as an operator
// would (outbox migrate): the outbox table, and for cdc its publication
// and slot.
func migrate(ctx context.Context, o *options, r *run, source string) error {
	cmd := exec.CommandContext(ctx, o.outboxBin, "migrate", "--store", r.dsn, "--source", source, "--slot", r.slot, "--log-level", "warn")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("outbox migrate: %v: %s", err, out)
	}
	return nil
}

// ---- outbox ----

type outboxSys struct {
	o      *options
	source string
	linger time.Duration // --kafka-linger; 0 is the default
	// oneCPU runs it with GOMAXPROCS=1: one thread at a time runs its Go
	// code (Go's default: the CPUs it may run on, or its container's CPU
	// quota rounded up to at least 2, whichever is fewer).
	oneCPU bool
}

func (s *outboxSys) Name() string {
	name := "outbox-" + s.source
	if s.linger != 0 {
		name += fmt.Sprintf("-linger%s", s.linger)
	}
	if s.oneCPU {
		name += "-1cpu"
	}
	return name
}

func (s *outboxSys) Setup(ctx context.Context, r *run) error { return migrate(ctx, s.o, r, s.source) }

func (s *outboxSys) Start(ctx context.Context, r *run) (*proc, error) {
	var env []string
	if s.oneCPU {
		env = []string{"GOMAXPROCS=1"}
	}
	return startProc(r, env, s.o.outboxBin, "relay", "--store", r.dsn, "--brokers", s.o.brokers, "--source", s.source,
		"--slot", r.slot, "--topic-template", r.prefix+".{aggregatetype}", "--kafka-linger", s.linger.String())
}

func (s *outboxSys) InsertBatch(ctx context.Context, conn *pgx.Conn, r *run, evs []event) error {
	return outboxInsertBatch(ctx, conn, evs, s.o.payloadBytes)
}

func (s *outboxSys) InsertOne(ctx context.Context, conn *pgx.Conn, r *run, ev event) error {
	return outboxInsertOne(ctx, conn, ev, s.o.payloadBytes)
}

func (s *outboxSys) Note() string {
	if s.source == "poll" {
		return "outbox relay --source poll (defaults: --poll-interval 100ms, --max-in-flight 1024; franz-go idempotent producer, acks=all, linger 0)"
	}
	if s.oneCPU {
		return fmt.Sprintf("GOMAXPROCS=1 outbox relay --source cdc --kafka-linger %s (one thread runs its goroutines; otherwise as outbox-cdc-linger5ms)", s.linger)
	}
	if s.linger != 0 {
		return fmt.Sprintf("outbox relay --source cdc --kafka-linger %s (Debezium's producer linger; otherwise as outbox-cdc)", s.linger)
	}
	return "outbox relay --source cdc (pgoutput; defaults: --max-in-flight 1024; franz-go idempotent producer, acks=all, linger 0)"
}

// ---- Debezium ----

type debeziumSys struct {
	o            *options
	pollInterval time.Duration // 0: Debezium's default (poll.interval.ms=500)
}

func (s *debeziumSys) Name() string {
	if s.pollInterval > 0 {
		return fmt.Sprintf("debezium-%dms", s.pollInterval.Milliseconds())
	}
	return "debezium"
}

// Setup creates our outbox table (outbox migrate --source poll: tables
// only, no slot). Debezium creates its own slot and publication when it
// first starts (publication.autocreate.mode=filtered).
func (s *debeziumSys) Setup(ctx context.Context, r *run) error { return migrate(ctx, s.o, r, "poll") }

func (s *debeziumSys) Start(ctx context.Context, r *run) (*proc, error) {
	u := r.env.pgURL
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		host, port = u.Hostname(), "5432"
	}
	pass, _ := u.User.Password()
	cp := filepath.Join(s.o.debeziumDir, "target", "classes") + ":" + filepath.Join(s.o.debeziumDir, "target", "deps", "*")
	args := []string{"-Xms256m", "-Xmx1g", "-cp", cp, "dev.outbox.peers.DebeziumPeer",
		"host=" + host, "port=" + port, "dbname=" + r.db, "user=" + u.User.Username(), "password=" + pass,
		"slot=" + r.slot, "publication=" + r.slot + "_pub", "topic=" + r.prefix, "brokers=" + s.o.brokers,
		"offsets=" + filepath.Join(r.dir, "debezium.offsets")}
	if s.pollInterval > 0 {
		args = append(args, fmt.Sprintf("poll.interval.ms=%d", s.pollInterval.Milliseconds()))
	}
	return startProc(r, nil, "java", args...)
}

func (s *debeziumSys) InsertBatch(ctx context.Context, conn *pgx.Conn, r *run, evs []event) error {
	return outboxInsertBatch(ctx, conn, evs, s.o.payloadBytes)
}

func (s *debeziumSys) InsertOne(ctx context.Context, conn *pgx.Conn, r *run, ev event) error {
	return outboxInsertOne(ctx, conn, ev, s.o.payloadBytes)
}

func (s *debeziumSys) Note() string {
	if s.pollInterval > 0 {
		return fmt.Sprintf("as debezium, with poll.interval.ms=%d", s.pollInterval.Milliseconds())
	}
	return "Debezium 3.6.1.Final embedded engine, PostgreSQL connector (pgoutput), EventRouter SMT; Kafka producer acks=all, idempotent, client defaults otherwise (linger.ms=5); engine defaults (max.batch.size 2048, poll.interval.ms 500); JVM -Xms256m -Xmx1g"
}

// ---- Watermill ----

type watermillSys struct {
	o            *options
	pollInterval time.Duration // 0: watermill-sql's default (1 s)
}

func (s *watermillSys) Name() string {
	if s.pollInterval > 0 {
		return fmt.Sprintf("watermill-%dms", s.pollInterval.Milliseconds())
	}
	return "watermill"
}

// Setup creates watermill-sql's tables for the forwarder topic (messages
// and offsets), as the forwarder's subscriber would with InitializeSchema
// (which it also has), so that writes never race its first start.
func (s *watermillSys) Setup(ctx context.Context, r *run) error {
	pool, err := pgxpool.New(ctx, r.dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(pool), wsql.SubscriberConfig{
		SchemaAdapter: wm.Schema(), OffsetsAdapter: wm.Offsets(), InitializeSchema: true,
	}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	defer sub.Close()
	return sub.SubscribeInitialize(wm.ForwarderTopic)
}

func (s *watermillSys) Start(ctx context.Context, r *run) (*proc, error) {
	args := []string{"-dsn", r.dsn, "-brokers", s.o.brokers}
	if s.pollInterval > 0 {
		args = append(args, "-poll-interval", s.pollInterval.String())
	}
	return startProc(r, nil, s.o.forwarderBin, args...)
}

func (s *watermillSys) messages(r *run, evs []event) []*message.Message {
	msgs := make([]*message.Message, len(evs))
	for i, ev := range evs {
		m := message.NewMessage(uuid.NewString(), makePayload(ev, s.o.payloadBytes))
		m.Metadata.Set(wm.KeyMetadata, aggID(ev.Agg))
		msgs[i] = m
	}
	return msgs
}

// publish is Watermill's transactional publishing: an SQL publisher on the
// writing transaction, decorated by the forwarder's publisher, which wraps
// each message in an envelope naming its destination (the Kafka topic) and
// stores it in the forwarder topic's table.
func (s *watermillSys) publish(ctx context.Context, conn *pgx.Conn, r *run, evs []event) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	sqlPub, err := wsql.NewPublisher(wsql.TxFromPgx(tx), wsql.PublisherConfig{SchemaAdapter: wm.Schema()}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	pub := forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{ForwarderTopic: wm.ForwarderTopic})
	if err := pub.Publish(r.topic, s.messages(r, evs)...); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func (s *watermillSys) InsertBatch(ctx context.Context, conn *pgx.Conn, r *run, evs []event) error {
	return s.publish(ctx, conn, r, evs)
}

func (s *watermillSys) InsertOne(ctx context.Context, conn *pgx.Conn, r *run, ev event) error {
	return s.publish(ctx, conn, r, []event{ev})
}

func (s *watermillSys) Note() string {
	if s.pollInterval > 0 {
		return "as watermill, with the SQL subscriber's PollInterval=" + s.pollInterval.String()
	}
	return "Watermill v1.5.1 components/forwarder; watermill-sql v4.1.2 DefaultPostgreSQLSchema + offsets adapter (defaults: batch 100, PollInterval 1s); watermill-kafka v3.0.6 publisher (Sarama sync producer, acks=all, idempotent, Version 2.1.0, partitioning marshaler keyed by aggregate id)"
}

// ---- relay processes ----

// proc is a relay running as its own OS process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  string
	t0   time.Time
}

// startProc starts name with args. env is added to the driver's
// environment, not put in its place: the relays need its PATH, JAVA_HOME
// and the rest.
func startProc(r *run, env []string, name string, args ...string) (*proc, error) {
	r.starts++
	logPath := filepath.Join(r.dir, fmt.Sprintf("relay-%d.log", r.starts))
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	p := &proc{cmd: cmd, done: make(chan struct{}), log: logPath}
	p.t0 = time.Now()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits for a graceful exit, then SIGKILLs.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		logf("relay pid %d did not stop in 30 s: SIGKILL", p.cmd.Process.Pid)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// cpu is the process's user+system CPU time so far, from /proc/PID/stat
// (utime and stime, in clock ticks of 1/100 s).
func (p *proc) cpu() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bad stat")
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, nil
}

// rssMB is the process's peak resident set (VmHWM), in MiB.
func (p *proc) rssMB() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

func (p *proc) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}
