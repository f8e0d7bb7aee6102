package scyllaemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/gocql/gocql"
)

// Config sets up a Proxy. Upstream is required.
type Config struct {
	// Listen is the proxy's address (default 127.0.0.1:0, a free port).
	Listen string
	// Upstream is the Cassandra node, host:port. Its triggers_dir must hold
	// the trigger jar (scripts/services.sh builds it).
	Upstream string
	// Topology shapes the first generation (default DefaultTopology).
	Topology Topology
	Logger   *slog.Logger
}

// Proxy speaks CQL to ScyllaDB clients and forwards to Apache Cassandra,
// rewriting what only ScyllaDB understands (see rewrite) and completing
// DDL on tables with cdc options (log table, trigger, options).
type Proxy struct {
	cfg   Config
	ln    net.Listener
	admin *gocql.Session
	log   *slog.Logger

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// hush are prepared ids of statements whose warnings are dropped.
	hush map[string]bool
}

// New connects to Cassandra, bootstraps the emulation keyspace and
// listens; Serve accepts clients.
func New(ctx context.Context, cfg Config) (*Proxy, error) {
	if cfg.Upstream == "" {
		return nil, errors.New("scyllaemu: Upstream (Cassandra host:port) is required")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Topology == (Topology{}) {
		cfg.Topology = DefaultTopology
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	host, port, err := net.SplitHostPort(cfg.Upstream)
	if err != nil {
		return nil, fmt.Errorf("scyllaemu: upstream %q: %w", cfg.Upstream, err)
	}
	c := gocql.NewCluster(host)
	c.Port, _ = strconv.Atoi(port)
	c.ProtoVersion = 4
	c.Consistency = gocql.One
	c.Timeout = 20 * time.Second // schema changes on a busy 2-core machine
	c.ConnectTimeout = 10 * time.Second
	admin, err := c.CreateSession()
	if err != nil {
		return nil, fmt.Errorf("scyllaemu: connect to %s: %w", cfg.Upstream, err)
	}
	if err := Bootstrap(ctx, admin, cfg.Topology); err != nil {
		admin.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		admin.Close()
		return nil, fmt.Errorf("scyllaemu: listen: %w", err)
	}
	return &Proxy{cfg: cfg, ln: ln, admin: admin, log: cfg.Logger, conns: map[net.Conn]struct{}{}, hush: map[string]bool{}}, nil
}

// Addr is where clients connect.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Session is the proxy's own session to Cassandra (not through the
// proxy): for tests that publish generations.
func (p *Proxy) Session() *gocql.Session { return p.admin }

// Serve accepts clients until ctx ends, then closes every connection.
func (p *Proxy) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { p.ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer p.closeConns()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("scyllaemu: accept: %w", err)
		}
		wg.Go(func() { p.handle(ctx, client) })
	}
}

// Close stops listening and closes the session; Serve returns.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.closeConns()
	p.admin.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (p *Proxy) track(c net.Conn, on bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		if p.conns == nil {
			return false
		}
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *Proxy) closeConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// conn is one client connection and its own connection to Cassandra.
type conn struct {
	p              *Proxy
	client, server net.Conn

	mu      sync.Mutex // guards pending, requests and writes to client
	pending map[int16]action
	// requests notes what a response needs done to it, by stream.
	requests map[int16]request
}

// request is what the proxy remembers of a request until its response.
type request struct {
	hush    bool // drop the response's warnings
	prepare bool // a PREPARE of a hushed statement: remember its id
}

// hushed are statements whose Cassandra-only warnings are dropped: the
// reader counts system.peers on every generation poll, and Cassandra 5
// answers each with "Aggregation query used without partition key",
// which the driver logs; ScyllaDB does not warn.
var hushed = map[string]bool{"SELECT COUNT(*) FROM system.peers": true}

func (p *Proxy) handle(ctx context.Context, client net.Conn) {
	server, err := net.Dial("tcp", p.cfg.Upstream)
	if err != nil {
		p.log.Error("scyllaemu: dial Cassandra", "err", err)
		client.Close()
		return
	}
	if !p.track(client, true) || !p.track(server, true) {
		client.Close()
		server.Close()
		return
	}
	defer p.track(client, false)
	defer p.track(server, false)
	c := &conn{p: p, client: client, server: server, pending: map[int16]action{}, requests: map[int16]request{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.pump(ctx, server, c.fromServer)
	}()
	c.pump(ctx, client, c.fromClient)
	<-done
}

// pump reads frames from src until it fails, then closes both sides.
func (c *conn) pump(ctx context.Context, src net.Conn, handle func(context.Context, frame) error) {
	defer c.client.Close()
	defer c.server.Close()
	for {
		f, err := readFrame(src)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.p.log.Debug("scyllaemu: connection ends", "err", err)
			}
			return
		}
		if err := handle(ctx, f); err != nil {
			c.p.log.Debug("scyllaemu: connection ends", "err", err)
			return
		}
	}
}

func (c *conn) toClient(f frame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.client.Write(f.bytes())
	return err
}

// fromClient rewrites a request and sends it on, or answers it.
func (c *conn) fromClient(_ context.Context, f frame) error {
	if v := f.version & 0x7f; v < 3 || v > 4 {
		return c.toClient(errorFrame(header{version: 4, stream: f.stream}, errProtocol,
			fmt.Sprintf("Invalid or unsupported protocol version (%d); the lowest supported version is 3 and the greatest is 4", v)))
	}
	if f.flags&flagCompression != 0 {
		return c.toClient(errorFrame(f.header, errProtocol, "scyllaemu: compressed frames are not supported; leave the driver's compressor unset"))
	}
	var (
		out    frame
		refuse string
		after  action
		err    error
	)
	switch f.opcode {
	case opQuery, opPrepare:
		out, refuse, after, err = rewriteStatementFrame(f)
	case opExecute:
		out, err = rewriteExecute(f)
	case opBatch:
		out, refuse, err = rewriteBatch(f)
	default:
		out = f
	}
	if err != nil {
		return c.toClient(errorFrame(f.header, errProtocol, err.Error()))
	}
	if refuse != "" {
		return c.toClient(errorFrame(f.header, errInvalid, refuse))
	}
	req := c.p.classify(f)
	c.mu.Lock()
	if after.kind != noAction {
		c.pending[f.stream] = after
	}
	if req != (request{}) {
		c.requests[f.stream] = req
	} else {
		delete(c.requests, f.stream)
	}
	c.mu.Unlock()
	_, err = c.server.Write(out.bytes())
	return err
}

// fromServer passes a response on, first completing the DDL it answers.
func (c *conn) fromServer(ctx context.Context, f frame) error {
	if f.stream >= 0 && (f.opcode == opResult || f.opcode == opError) {
		c.mu.Lock()
		after, ok := c.pending[f.stream]
		delete(c.pending, f.stream)
		req := c.requests[f.stream]
		delete(c.requests, f.stream)
		c.mu.Unlock()
		if req.prepare && f.opcode == opResult {
			c.p.rememberPrepared(f)
		}
		if req.hush {
			f = withoutWarnings(f)
		}
		if ok && f.opcode == opResult {
			if err := c.p.complete(ctx, after, resultKind(f)); err != nil {
				c.p.log.Error("scyllaemu: CDC emulation of a DDL statement failed", "keyspace", after.keyspace, "table", after.table, "err", err)
				return c.toClient(errorFrame(header{version: f.version &^ 0x80, stream: f.stream}, 0x0000, err.Error()))
			}
		}
	}
	return c.toClient(f)
}

// classify notes what the response to f will need: statements are
// hushed by text, or by prepared id once prepared.
func (p *Proxy) classify(f frame) request {
	r := reader{b: f.body}
	if f.flags&flagCustomPayload != 0 {
		for range r.short() {
			r.string()
			r.bytes()
		}
	}
	switch f.opcode {
	case opQuery:
		return request{hush: hushed[r.longString()]}
	case opPrepare:
		if hushed[r.longString()] {
			return request{prepare: true}
		}
	case opExecute:
		id := r.shortBytes()
		p.mu.Lock()
		defer p.mu.Unlock()
		return request{hush: r.err == nil && p.hush[string(id)]}
	}
	return request{}
}

// rememberPrepared notes the id of a hushed statement from its PREPARED
// result.
func (p *Proxy) rememberPrepared(f frame) {
	r := reader{b: skipPrefix(f)}
	if r.int() != 0x0004 { // Prepared
		return
	}
	id := r.shortBytes()
	if r.err == nil {
		p.mu.Lock()
		p.hush[string(id)] = true
		p.mu.Unlock()
	}
}

// withoutWarnings drops a response's warnings.
func withoutWarnings(f frame) frame {
	if f.flags&flagWarning == 0 {
		return f
	}
	r := reader{b: f.body}
	var w writer
	if f.flags&flagTracing != 0 {
		w.raw(r.take(16))
	}
	for range r.short() {
		r.string()
	}
	if r.err != nil {
		return f
	}
	w.raw(r.b)
	f.body, f.flags = w.b, f.flags&^flagWarning
	return f
}

// complete does what ScyllaDB does with CDC alongside a DDL statement
// Cassandra has just run.
func (p *Proxy) complete(ctx context.Context, a action, kind int32) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	switch a.kind {
	case createLog:
		// CREATE TABLE IF NOT EXISTS over an existing table changes
		// nothing, in ScyllaDB as in Cassandra.
		if kind != resultSchemaChange {
			return nil
		}
		p.log.Info("scyllaemu: enabling CDC", "keyspace", a.keyspace, "table", a.table, "ttl", a.ttl)
		return enableCDC(ctx, p.admin, a.keyspace, a.table, a.ttl)
	case syncLog:
		return syncLogColumns(ctx, p.admin, a.keyspace, a.table)
	case dropLog:
		return dropLogTable(ctx, p.admin, a.keyspace, a.table)
	case dropKeyspace:
		return forgetKeyspace(ctx, p.admin, a.keyspace)
	}
	return nil
}

// resultKind reads a RESULT's kind.
func resultKind(f frame) int32 {
	r := reader{b: skipPrefix(f)}
	return r.int()
}

// skipPrefix is a response's body past the optional tracing id,
// warnings and custom payload.
func skipPrefix(f frame) []byte {
	r := reader{b: f.body}
	if f.flags&flagTracing != 0 {
		r.take(16)
	}
	if f.flags&flagWarning != 0 {
		for range r.short() {
			r.string()
		}
	}
	if f.flags&flagCustomPayload != 0 {
		for range r.short() {
			r.string()
			r.bytes()
		}
	}
	return r.b
}

// rewriteStatementFrame rewrites QUERY and PREPARE: their body starts
// with the statement ([long string]); a QUERY's parameters follow.
func rewriteStatementFrame(f frame) (frame, string, action, error) {
	r := reader{b: f.body}
	var w writer
	copyCustomPayload(f, &r, &w)
	p := rewrite(r.longString())
	w.longString(p.stmt)
	if f.opcode == opQuery {
		rewriteValues(&r, &w, renameValue)
	} else {
		// A prepared statement runs later, by id: no DDL action can follow
		// it (drivers send DDL as plain queries anyway).
		p.after = action{}
		w.raw(r.b)
	}
	if r.err != nil {
		return f, "", action{}, r.err
	}
	f.body = w.b
	return f, p.refuse, p.after, nil
}

func rewriteExecute(f frame) (frame, error) {
	r := reader{b: f.body}
	var w writer
	copyCustomPayload(f, &r, &w)
	w.shortBytes(r.shortBytes())
	rewriteValues(&r, &w, renameValue)
	if r.err != nil {
		return f, r.err
	}
	f.body = w.b
	return f, nil
}

// rewriteBatch rewrites each statement and value of a BATCH.
func rewriteBatch(f frame) (frame, string, error) {
	r := reader{b: f.body}
	var w writer
	copyCustomPayload(f, &r, &w)
	w.byte(r.byte()) // type
	n := r.short()
	w.short(n)
	refuse := ""
	for range n {
		kind := r.byte()
		w.byte(kind)
		if kind == 0 {
			p := rewrite(r.longString())
			if p.refuse != "" {
				refuse = p.refuse
			}
			w.longString(p.stmt)
		} else {
			w.shortBytes(r.shortBytes())
		}
		values := r.short()
		w.short(values)
		for range values {
			v, l := r.bytes()
			if l >= 0 {
				v = renameValue(v)
			}
			w.value(v, l)
		}
	}
	w.raw(r.b)
	if r.err != nil {
		return f, "", r.err
	}
	f.body = w.b
	return f, refuse, nil
}
