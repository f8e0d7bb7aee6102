package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/outbox-dev/outbox/mapping"
	"github.com/outbox-dev/outbox/outbox"
)

// ErrSlotLost is returned when the replication slot the relay confirmed
// positions to is missing or its WAL was removed: events may have been
// missed, so the relay refuses to run until an operator decides
// (CDCConfig.RecreateSlot).
var ErrSlotLost = outbox.Fatal(errors.New("replication slot lost"))

// CDCConfig configures logical replication. Its zero value works.
type CDCConfig struct {
	// Slot is the permanent replication slot (default "outbox_relay").
	Slot string
	// Publication covers the outbox table only (default "outbox_pub").
	Publication string
	// StatusInterval is how often confirmed positions and keepalives are
	// sent to the server (default 200 ms). What a crashed relay re-reads
	// (and publishes again) is what it acknowledged since the last one.
	StatusInterval time.Duration
	// RecreateSlot drops and recreates a lost or missing slot. Events
	// committed while the slot was gone are NOT delivered; the error
	// says from which position.
	RecreateSlot bool
	// Mapping names the table to read and its columns; nil reads
	// outbox's own table (mapping.Outbox). It is checked against the
	// table when the source is set up, and against every relation
	// message the stream carries, once per relation, not per row.
	Mapping *mapping.Mapping
	Logger  *slog.Logger
}

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (c *CDCConfig) setDefaults() error {
	if c.Slot == "" {
		c.Slot = "outbox_relay"
	}
	if c.Publication == "" {
		c.Publication = "outbox_pub"
	}
	if !identifier.MatchString(c.Slot) || !identifier.MatchString(c.Publication) {
		return fmt.Errorf("postgres: slot and publication names must be lower-case identifiers, got %q and %q", c.Slot, c.Publication)
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = 200 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// CDCSource streams outbox inserts from the write-ahead log with pgoutput.
type CDCSource struct {
	s       *Store
	cfg     CDCConfig
	mapping mapping.Mapping
	// confirmed is the last LSN confirmed to the server; lag is measured
	// against it.
	confirmed atomic.Uint64
}

var _ outbox.Source = (*CDCSource)(nil)

// CDC builds a logical-replication source over the store's database.
func (s *Store) CDC(cfg CDCConfig) (*CDCSource, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	m, err := normalize(cfg.Mapping)
	if err != nil {
		return nil, err
	}
	return &CDCSource{s: s, cfg: cfg, mapping: m}, nil
}

func (c *CDCSource) checkpointName() string { return "cdc:" + c.cfg.Slot }

// Setup checks the mapping against its table, creates the publication and
// the slot when they do not exist yet, and fails with ErrSlotLost when a
// slot the relay used is gone or lost. A mapping that does not fit its
// table is fatal: the error names the table, the column and the key.
func (c *CDCSource) Setup(ctx context.Context) (pglogrepl.LSN, error) {
	start, _, err := c.setup(ctx)
	return start, err
}

func (c *CDCSource) setup(ctx context.Context) (pglogrepl.LSN, *pgTable, error) {
	table, err := c.s.describe(ctx, c.mapping)
	if err == nil {
		_, err = c.mapping.Resolve(table.String(), table.columns(true), mapping.Order{})
	}
	if err != nil {
		if errors.Is(err, mapping.ErrInvalid) {
			err = outbox.Fatal(err)
		}
		return 0, nil, err
	}
	start, err := c.slot(ctx, table)
	return start, table, err
}

func (c *CDCSource) slot(ctx context.Context, table *pgTable) (pglogrepl.LSN, error) {
	pool := c.s.pool
	var pubExists bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, c.cfg.Publication).Scan(&pubExists); err != nil {
		return 0, fmt.Errorf("postgres: check publication: %w", err)
	}
	if !pubExists {
		if _, err := pool.Exec(ctx, `CREATE PUBLICATION `+c.cfg.Publication+` FOR TABLE `+table.quoted()+` WITH (publish = 'insert')`); err != nil {
			return 0, fmt.Errorf("postgres: create publication %s: %w", c.cfg.Publication, err)
		}
	} else {
		var tables []string
		rows, err := pool.Query(ctx, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1`, c.cfg.Publication)
		if err != nil {
			return 0, fmt.Errorf("postgres: check publication: %w", err)
		}
		tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(tables) != 1 || tables[0] != table.String() {
			return 0, fmt.Errorf("postgres: publication %s must cover the outbox table only (%s), it covers %v", c.cfg.Publication, table, tables)
		}
	}
	saved, err := c.s.LoadCheckpoint(ctx, c.checkpointName())
	if err != nil {
		return 0, err
	}
	var walStatus, confirmed *string
	err = pool.QueryRow(ctx, `SELECT wal_status, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, c.cfg.Slot).Scan(&walStatus, &confirmed)
	missing := errors.Is(err, pgx.ErrNoRows)
	if err != nil && !missing {
		return 0, fmt.Errorf("postgres: check slot %s: %w", c.cfg.Slot, err)
	}
	lost := !missing && walStatus != nil && *walStatus == "lost"
	if (missing && saved != "") || lost {
		what := "is missing"
		if lost {
			what = "has wal_status 'lost' (its WAL was removed)"
		}
		if !c.cfg.RecreateSlot {
			return 0, fmt.Errorf("postgres: slot %s %s; the relay had confirmed up to %s, and events committed since may be gone. "+
				"Check the outbox table, then restart with --recreate-slot to continue from now: %w", c.cfg.Slot, what, orNone(saved), ErrSlotLost)
		}
		c.cfg.Logger.Error("recreating replication slot: events committed after the last confirmed position and before now are NOT delivered; check the outbox table",
			"slot", c.cfg.Slot, "was", what, "last_confirmed", orNone(saved))
		if !missing {
			if _, err := pool.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, c.cfg.Slot); err != nil {
				return 0, fmt.Errorf("postgres: drop lost slot %s: %w", c.cfg.Slot, err)
			}
		}
		missing = true
	}
	if missing {
		var lsn string
		if err := pool.QueryRow(ctx, `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, c.cfg.Slot).Scan(&lsn); err != nil {
			return 0, fmt.Errorf("postgres: create slot %s: %w", c.cfg.Slot, err)
		}
		start, _ := pglogrepl.ParseLSN(lsn)
		if err := c.s.SaveCheckpoint(ctx, c.checkpointName(), outbox.Position(start.String())); err != nil {
			return 0, err
		}
		var before int64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+table.quoted()).Scan(&before); err == nil && before > 0 {
			c.cfg.Logger.Error("replication slot created after outbox rows were written: those rows are not captured; "+
				"create the slot before the first write (outbox migrate --source cdc) or drain them with --source poll",
				"slot", c.cfg.Slot, "table", table.String(), "rows_before_slot", before)
		}
		return start, nil
	}
	start, err := pglogrepl.ParseLSN(*confirmed)
	if err != nil {
		return 0, fmt.Errorf("postgres: slot %s confirmed position %q: %w", c.cfg.Slot, *confirmed, err)
	}
	// The slot persists its confirmed position only at the server's own
	// checkpoints, and hears of it only with the next status update, so
	// after a crash (the server's or the relay's) it can be far behind
	// what the broker acknowledged. The relay's checkpoint row is written
	// in the same transaction-safe way as any row, after acknowledgement:
	// start from the later of the two, and a crash republishes at most
	// the relay's in-flight window. The server skips every transaction
	// that committed before a start position past its confirmed one.
	if saved != "" {
		own, err := pglogrepl.ParseLSN(string(saved))
		if err != nil {
			return 0, fmt.Errorf("postgres: relay checkpoint %q of slot %s: %w", saved, c.cfg.Slot, err)
		}
		start = max(start, own)
	}
	return start, nil
}

func orNone(s outbox.Position) string {
	if s == "" {
		return "nothing"
	}
	return string(s)
}

// SlotLag reports how far the slot's confirmed position is behind the
// server's WAL, in bytes.
func (c *CDCSource) SlotLag(ctx context.Context) (int64, error) {
	var lag *int64
	err := c.s.pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, c.cfg.Slot).Scan(&lag)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("postgres: slot %s: %w", c.cfg.Slot, ErrSlotLost)
	}
	if err != nil || lag == nil {
		return 0, err
	}
	return *lag, nil
}

// objectInUse is SQLSTATE 55006: the slot is active for another session.
const objectInUse = "55006"

// Open connects for replication and streams from the later of the slot's
// confirmed position and the relay's checkpoint (see Setup). A record's
// position is the end of the last transaction it completes, so a partly
// acknowledged transaction is never confirmed.
func (c *CDCSource) Open(ctx context.Context) (outbox.Cursor, error) {
	cfg, err := pgconn.ParseConfig(c.s.dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse DSN: %w", redact(err))
	}
	cfg.RuntimeParams["replication"] = "database"
	// pgoutput prints every value with this session's settings: fix the
	// ones the decoder reads, whatever the server's or database's are.
	cfg.RuntimeParams["DateStyle"] = "ISO, MDY"
	cfg.RuntimeParams["TimeZone"] = "UTC"
	cfg.RuntimeParams["bytea_output"] = "hex"
	var conn *pgconn.PgConn
	var start pglogrepl.LSN
	var table *pgTable
	// The slot admits one reader. While another session holds it (another
	// relay, the active one; or a restarted relay's previous session that
	// the server has not yet seen go), this one waits as a standby, says so
	// once, and takes over when the slot is free, from where the other
	// left off.
	for standby := false; ; {
		if start, table, err = c.setup(ctx); err != nil {
			return nil, err
		}
		if conn, err = pgconn.ConnectConfig(ctx, cfg); err != nil {
			return nil, fmt.Errorf("postgres: replication connection: %w", err)
		}
		err = pglogrepl.StartReplication(ctx, conn, c.cfg.Slot, start, pglogrepl.StartReplicationOptions{
			PluginArgs: []string{"proto_version '1'", "publication_names '" + c.cfg.Publication + "'"},
		})
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != objectInUse {
			if err == nil && standby {
				c.cfg.Logger.Warn("took over: this relay now reads the slot", "slot", c.cfg.Slot, "from", start.String())
			}
			if err == nil {
				var confirmed pglogrepl.LSN
				if c.s.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1`, c.cfg.Slot).Scan(&confirmed) == nil && start > confirmed {
					c.cfg.Logger.Info("resuming from the relay's checkpoint, past the slot's confirmed position",
						"slot", c.cfg.Slot, "checkpoint", start.String(), "slot_confirmed", confirmed.String())
				}
			}
			break
		}
		conn.Close(context.Background())
		if !standby {
			standby = true
			var pid *int32
			c.s.pool.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, c.cfg.Slot).Scan(&pid)
			c.cfg.Logger.Warn("standby: the replication slot is in use by another session; this relay takes over when it is free",
				"slot", c.cfg.Slot, "active_pid", pid)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	if err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("postgres: start replication on %s: %w", c.cfg.Slot, err)
	}
	c.confirmed.Store(uint64(start))
	cur := &cdcCursor{
		src: c, conn: conn, done: make(chan struct{}),
		arrived: make(chan struct{}, 1), taken: make(chan struct{}, 1),
		table: table, relations: map[uint32]*relation{},
		lastCommitEnd: start, lastCommitPos: lsnPosition(start), serverEnd: start,
	}
	cur.ackedLSN.Store(uint64(start))
	cur.handedLSN.Store(uint64(start))
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cur.cancel = cancel
	go cur.run(runCtx)
	return cur, nil
}

// Records are handed to the relay in chunks of at most cdcChunkSize, a
// transaction's rows or the part of a large one decoded so far, and up to
// cdcHeld records wait for it (besides the rest of its last read, when it
// asked for fewer): what the cursor holds is bounded whatever the size of
// a transaction, and the small transactions that commit while the relay
// publishes go to it in its next read, up to what it asks for. pgoutput
// sends a transaction only once it has committed, so its rows can be
// handed over before its COMMIT arrives.
const (
	cdcChunkSize = 256
	cdcHeld      = 4 * cdcChunkSize
)

type cdcCursor struct {
	src    *CDCSource
	conn   *pgconn.PgConn
	done   chan struct{}
	cancel context.CancelFunc
	once   sync.Once

	// Between run and Next: the records handed over and not yet taken,
	// and whether run stopped, with why (err).
	mu      sync.Mutex
	handed  []outbox.Record
	ended   bool
	err     error
	arrived chan struct{} // records were handed over, or run stopped
	taken   chan struct{} // Next took what was handed over: room for more

	// Owned by run.
	ctx           context.Context // run's
	runErr        error           // why run stops
	table         *pgTable        // as the catalog described it at Open
	relations     map[uint32]*relation
	last          *relation // the relation of the last insert: the next is most likely the same
	inTx          bool
	commitTime    time.Time     // the transaction's, for a mapping without a timestamp column
	held          outbox.Record // the newest row: its position is known only at the next message
	holding       bool
	ready         []outbox.Record // the chunk being filled or waiting to be handed over
	readyEnd      pglogrepl.LSN   // the transaction end the chunk completes, if any
	lastCommitEnd pglogrepl.LSN
	lastCommitPos outbox.Position // lastCommitEnd's, made once per transaction
	chunkCap      int             // the length of the last chunk handed over: room for the next
	serverEnd     pglogrepl.LSN

	// ackedLSN: what the relay acknowledged (set by Commit).
	ackedLSN atomic.Uint64
	// handedLSN: the end of the last transaction whose last row the relay has.
	handedLSN atomic.Uint64
	carry     []outbox.Record // the rest of a chunk larger than Next's max
}

// Next takes every record handed over so far (and returns at most max of
// them): the transactions that committed while the relay was publishing
// go together, where one read per transaction would be one publish per
// transaction.
func (c *cdcCursor) Next(ctx context.Context, max int) ([]outbox.Record, error) {
	var idle *time.Timer
	for len(c.carry) == 0 {
		c.mu.Lock()
		recs, ended, err := c.handed, c.ended, c.err
		c.handed = nil
		c.mu.Unlock()
		if len(recs) > 0 {
			c.carry = recs
			select {
			case c.taken <- struct{}{}:
			default:
			}
			break
		}
		if ended {
			if err != nil {
				return nil, err
			}
			return nil, errors.New("postgres: replication stream ended")
		}
		if idle == nil {
			idle = time.NewTimer(250 * time.Millisecond)
			defer idle.Stop()
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-idle.C:
			return nil, nil // idle: let the relay look around
		case <-c.arrived:
		}
	}
	n := min(max, len(c.carry))
	recs := c.carry[:n:n]
	c.carry = c.carry[n:]
	return recs, nil
}

// Commit records that everything up to pos was acknowledged; the stream
// goroutine confirms it to the server with its next status update.
func (c *cdcCursor) Commit(ctx context.Context, pos outbox.Position) error {
	lsn, err := pglogrepl.ParseLSN(string(pos))
	if err != nil {
		return fmt.Errorf("postgres: bad CDC position %q", pos)
	}
	for {
		cur := c.ackedLSN.Load()
		if uint64(lsn) <= cur || c.ackedLSN.CompareAndSwap(cur, uint64(lsn)) {
			break
		}
	}
	return c.src.s.SaveCheckpoint(ctx, c.src.checkpointName(), pos)
}

// Close stops the stream, confirms what was acknowledged, and
// disconnects; it is safe to call more than once. A stream that already
// failed is not told anything more: the next Open resumes from the later
// of the slot and the relay's checkpoint.
func (c *cdcCursor) Close() error {
	c.once.Do(func() {
		c.cancel()
		<-c.done
		if c.conn.IsClosed() {
			// A failed receive closed it; the driver may still be sending
			// its goodbye on it from a goroutine of its own (pgconn's
			// asyncClose), so nothing more may be written.
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c.sendStatus(ctx)
		c.conn.Close(ctx)
	})
	return nil
}

// run owns the replication connection: it receives WAL, hands rows to
// Next in chunks, and sends status updates every StatusInterval whether
// or not the relay is taking rows. While a chunk waits for the relay (its
// breaker open, its window full) run stops reading, so the server holds
// the rest, but it keeps answering: a walsender that hears nothing for
// wal_sender_timeout (60 s by default) ends the connection.
//
// A receive is bounded by a read deadline on the connection, set when the
// next status update is due, and ended early by ctx through the same
// deadline; not by a context per message, whose watcher cost about a tenth
// of the relay's CPU in the drain.
func (c *cdcCursor) run(ctx context.Context) {
	c.ctx = ctx
	defer close(c.done)
	defer c.stopped()
	netConn := c.conn.Conn()
	defer func() {
		if !c.conn.IsClosed() { // else the driver's close owns the deadline
			netConn.SetReadDeadline(time.Time{})
		}
	}()
	defer context.AfterFunc(ctx, func() { netConn.SetReadDeadline(time.Now()) })()
	nextStatus := time.Now()
	var deadline time.Time // of the connection's reads
	for ctx.Err() == nil {
		if !time.Now().Before(nextStatus) {
			if err := c.sendStatus(ctx); err != nil {
				c.runErr = err
				return
			}
			nextStatus = time.Now().Add(c.src.cfg.StatusInterval)
		}
		if c.chunkDue() {
			if c.handOver() {
				continue
			}
			// The relay holds cdcHeld records not taken yet: read no more
			// until it takes them (the server holds the rest), answering
			// the server meanwhile.
			wait := time.NewTimer(time.Until(nextStatus))
			select {
			case <-c.taken:
			case <-wait.C:
			case <-ctx.Done():
			}
			wait.Stop()
			continue
		}
		if !deadline.Equal(nextStatus) {
			deadline = nextStatus
			netConn.SetReadDeadline(deadline)
			if ctx.Err() != nil { // ended before the deadline was set: the watch's was overwritten
				return
			}
		}
		raw, err := c.conn.ReceiveMessage(context.Background())
		if err != nil {
			if isTimeout(err) || ctx.Err() != nil {
				continue
			}
			c.runErr = fmt.Errorf("postgres: receive WAL: %w", err)
			return
		}
		switch msg := raw.(type) {
		case *pgproto3.ErrorResponse:
			c.runErr = fmt.Errorf("postgres: replication error: %w", pgconn.ErrorResponseToPgError(msg))
			return
		case *pgproto3.CopyData:
			if err := c.handleCopyData(msg.Data, &nextStatus); err != nil {
				c.runErr = err
				return
			}
		}
	}
}

// handOver hands the chunk to the relay, unless the relay holds cdcHeld
// records not taken yet; it reports whether it did.
func (c *cdcCursor) handOver() bool {
	c.mu.Lock()
	switch {
	case len(c.handed) == 0:
		c.handed = c.ready
	case len(c.handed)+len(c.ready) <= cdcHeld:
		c.handed = append(c.handed, c.ready...)
	default:
		c.mu.Unlock()
		return false
	}
	c.mu.Unlock()
	c.handedOver()
	select {
	case c.arrived <- struct{}{}:
	default:
	}
	return true
}

// stopped tells Next that run stopped, and why: after the records handed
// over, Next returns the error.
func (c *cdcCursor) stopped() {
	c.mu.Lock()
	c.ended, c.err = true, c.runErr
	c.mu.Unlock()
	select {
	case c.arrived <- struct{}{}:
	default:
	}
}

// chunkDue reports whether the chunk must go to the relay before more is
// read: it is full, or it ends a transaction (so the relay sees it now,
// not when the next one arrives).
func (c *cdcCursor) chunkDue() bool {
	return len(c.ready) >= cdcChunkSize || (len(c.ready) > 0 && c.readyEnd != 0)
}

func (c *cdcCursor) handedOver() {
	if c.readyEnd != 0 {
		c.handedLSN.Store(uint64(c.readyEnd))
	}
	c.chunkCap = len(c.ready)
	c.ready, c.readyEnd = nil, 0
}

// appendReady adds rec to the chunk, which starts with room for as many
// records as the last one had: a backlog fills chunks of cdcChunkSize,
// a quiet stream hands over one transaction at a time.
func (c *cdcCursor) appendReady(rec outbox.Record) {
	if c.ready == nil {
		c.ready = make([]outbox.Record, 0, max(1, c.chunkCap))
	}
	c.ready = append(c.ready, rec)
}

// lsnPosition is lsn as PostgreSQL and pglogrepl spell it (%X/%X), in one
// allocation: a row's position is made once per transaction on the
// stream's hot path.
func lsnPosition(lsn pglogrepl.LSN) outbox.Position {
	var b [17]byte
	out := appendUpperHex(b[:0], uint32(lsn>>32))
	out = append(out, '/')
	out = appendUpperHex(out, uint32(lsn))
	return outbox.Position(out)
}

func appendUpperHex(b []byte, v uint32) []byte {
	const digits = "0123456789ABCDEF"
	var tmp [8]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = digits[v&0xF]
		v >>= 4
		if v == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}

func (c *cdcCursor) handleCopyData(data []byte, nextStatus *time.Time) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("postgres: keepalive: %w", err)
		}
		if ka.ServerWALEnd > c.serverEnd {
			c.serverEnd = ka.ServerWALEnd
		}
		if ka.ReplyRequested {
			*nextStatus = time.Time{}
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("postgres: XLogData: %w", err)
		}
		return c.handleLogical(xld.WALData, xld.WALStart)
	}
	return nil
}

// handleLogical decodes one pgoutput message. A row's position is the
// previous transaction's end, except for its transaction's last row,
// whose position is the transaction's own end: so a checkpoint never
// confirms a transaction that is only partly acknowledged. Which row is
// last is known only at the next message, so the newest row is held back
// until then.
func (c *cdcCursor) handleLogical(data []byte, at pglogrepl.LSN) error {
	if len(data) > 0 && data[0] == byte(pglogrepl.MessageTypeInsert) {
		rec, err := c.insert(data, at)
		if err != nil {
			return err
		}
		if c.holding {
			c.held.Position = c.lastCommitPos
			c.appendReady(c.held)
		}
		c.held, c.holding = rec, true
		return nil
	}
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("postgres: pgoutput: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		r, err := c.resolve(m)
		if err != nil {
			return err
		}
		c.relations[m.RelationID], c.last = r, nil
	case *pglogrepl.BeginMessage:
		c.inTx = true
		c.commitTime = m.CommitTime.UTC().Truncate(time.Microsecond)
	case *pglogrepl.CommitMessage:
		end := m.TransactionEndLSN
		pos := lsnPosition(end)
		if c.holding {
			c.held.Position = pos
			c.appendReady(c.held)
			c.held, c.holding, c.readyEnd = outbox.Record{}, false, end
		}
		c.inTx = false
		c.lastCommitEnd, c.lastCommitPos = end, pos
		if end > c.serverEnd {
			c.serverEnd = end
		}
	}
	return nil
}

// sendStatus confirms what the relay acknowledged. When everything handed
// to the relay was acknowledged and nothing is on its way, it confirms up
// to the server's WAL end, so an idle outbox does not pin WAL written for
// other tables.
func (c *cdcCursor) sendStatus(ctx context.Context) error {
	acked := pglogrepl.LSN(c.ackedLSN.Load())
	idle := !c.inTx && !c.holding && len(c.ready) == 0 && acked >= pglogrepl.LSN(c.handedLSN.Load())
	if idle && c.serverEnd > acked && c.lastCommitEnd <= acked {
		acked = c.serverEnd
	}
	err := pglogrepl.SendStandbyStatusUpdate(ctx, c.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: acked, WALFlushPosition: acked, WALApplyPosition: acked,
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("postgres: standby status: %w", err)
	}
	c.src.confirmed.Store(uint64(acked))
	return nil
}

// relation is a relation of the stream resolved against the mapping,
// once: its rows are decoded by column index.
type relation struct {
	id   uint32
	plan *mapping.Plan
	dec  *mapping.Decoder
	vals [][]byte // the row being decoded: slices of the WAL message, reused
}

// resolve checks a relation message (sent before the first row of a
// relation, and again after its table changed) against the mapping. One
// that does not fit is fatal: no restart makes the table fit, and the
// error names the column.
func (c *cdcCursor) resolve(m *pglogrepl.RelationMessage) (*relation, error) {
	if m.Namespace != c.table.schema || m.RelationName != c.table.name {
		return nil, outbox.Fatal(fmt.Errorf("postgres: %w: publication %s carries table %s.%s, but the mapping reads %s",
			mapping.ErrInvalid, c.src.cfg.Publication, m.Namespace, m.RelationName, c.table))
	}
	cols := make([]mapping.Column, len(m.Columns))
	for i, rc := range m.Columns {
		known, ok := c.table.column(rc.Name)
		if !ok || known.typeOID != rc.DataType {
			// The table changed since Open: ask the catalog again.
			table, err := c.src.s.describe(c.ctx, c.src.mapping)
			if err != nil {
				return nil, err
			}
			c.table = table
			if known, ok = table.column(rc.Name); !ok || known.typeOID != rc.DataType {
				known = pgColumn{Column: mapping.Column{Name: rc.Name, Type: fmt.Sprintf("type %d", rc.DataType)}}
			}
		}
		cols[i] = known.Column
	}
	plan, err := c.src.mapping.Resolve(c.table.String(), cols, mapping.Order{})
	if err != nil {
		return nil, outbox.Fatal(fmt.Errorf("postgres: the stream's relation %s no longer fits the mapping: %w", c.table, err))
	}
	return &relation{id: m.RelationID, plan: plan, dec: plan.Decoder(), vals: make([][]byte, len(cols))}, nil
}

// insert decodes an insert message. It reads the tuple in place, where
// pglogrepl.Parse would allocate and copy every column of every row: this
// is the stream's hot path. A row the mapping cannot decode becomes a dead
// letter (Record.Err), named by its WAL position so that reading it again
// gives the same one.
func (c *cdcCursor) insert(data []byte, at pglogrepl.LSN) (outbox.Record, error) {
	// 'I', relation id (int32), 'N', then the tuple: a column count
	// (int16) and, per column, its kind and, for text, a length (int32)
	// and the bytes.
	if len(data) < 8 || data[5] != 'N' {
		return outbox.Record{}, fmt.Errorf("postgres: pgoutput: malformed insert message")
	}
	id := binary.BigEndian.Uint32(data[1:5])
	r := c.last
	if r == nil || r.id != id {
		if r = c.relations[id]; r == nil {
			return outbox.Record{}, fmt.Errorf("postgres: insert for unknown relation %d", id)
		}
		c.last = r
	}
	n := int(binary.BigEndian.Uint16(data[6:8]))
	if n != len(r.vals) {
		return outbox.Record{}, fmt.Errorf("postgres: insert into %s has %d columns, relation has %d", c.table, n, len(r.vals))
	}
	rest := data[8:]
	for i := range r.vals {
		if len(rest) < 1 {
			return outbox.Record{}, fmt.Errorf("postgres: pgoutput: insert into %s cut short", c.table)
		}
		kind := rest[0]
		rest = rest[1:]
		switch kind {
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			if len(rest) < 4 {
				return outbox.Record{}, fmt.Errorf("postgres: pgoutput: insert into %s cut short", c.table)
			}
			l := int(binary.BigEndian.Uint32(rest))
			if l < 0 || len(rest)-4 < l {
				return outbox.Record{}, fmt.Errorf("postgres: pgoutput: insert into %s cut short", c.table)
			}
			r.vals[i] = rest[4 : 4+l : 4+l]
			rest = rest[4+l:]
		default: // NULL; an insert carries no unchanged TOAST
			r.vals[i] = nil
		}
	}
	m, err := r.dec.Decode(r.vals, c.commitTime)
	if err != nil {
		if !errors.Is(err, mapping.ErrRow) {
			return outbox.Record{}, err
		}
		return outbox.Record{Message: r.plan.Undecodable(at.String(), r.vals, m, err), Err: err}, nil
	}
	return outbox.Record{Message: m}, nil
}

// isTimeout reports whether err is a read that ran into the connection's
// deadline, which pgconn leaves open (pgconn.Timeout knows only its own).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ConfirmedLSN is the last position confirmed to the server.
func (c *CDCSource) ConfirmedLSN() pglogrepl.LSN { return pglogrepl.LSN(c.confirmed.Load()) }

// CheckpointName is where the source records its confirmed position.
func (c *CDCSource) CheckpointName() string { return c.checkpointName() }
