package bench

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/outbox-dev/outbox/retry"
)

// The source-side baselines: how fast the same rows can be read from the
// store with nothing published, so that the drain is compared with the
// slower of the two ends of the pipe, not only with the broker's.

// rawSlotRead reads n inserted rows from the relay's own replication slot
// with pglogrepl (pgoutput, the relay's plugin arguments), parsing each
// insert's tuple in place and copying its columns into a fresh row the way
// the CDC source does before it maps them, and publishes nothing. It never
// confirms a position, so the relay then reads the same rows from the
// start; it returns once the server has let go of the slot.
func rawSlotRead(ctx context.Context, dsn, slot, publication string, n int) (time.Duration, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return 0, err
	}
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("raw slot read: connect: %w", err)
	}
	err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + publication + "'"},
	})
	if err != nil {
		conn.Close(context.Background())
		return 0, fmt.Errorf("raw slot read: start replication: %w", err)
	}
	rows, sink := 0, 0
	var t0 time.Time
	deadline := time.Now().Add(10 * time.Minute)
	for rows < n {
		if time.Now().After(deadline) {
			conn.Close(context.Background())
			return 0, fmt.Errorf("raw slot read: %d of %d rows in 10 minutes", rows, n)
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			conn.Close(context.Background())
			return 0, fmt.Errorf("raw slot read: %d of %d rows: %w", rows, n, err)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok {
			if e, ok := msg.(*pgproto3.ErrorResponse); ok {
				conn.Close(context.Background())
				return 0, fmt.Errorf("raw slot read: %w", pgconn.ErrorResponseToPgError(e))
			}
			continue
		}
		if len(cd.Data) == 0 || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue // keepalives: no reply needed within the read
		}
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			conn.Close(context.Background())
			return 0, err
		}
		if d := xld.WALData; len(d) > 8 && d[0] == byte(pglogrepl.MessageTypeInsert) {
			if rows == 0 {
				t0 = time.Now() // from the first row, as the relay is timed from its first acknowledgement
			}
			row := tupleColumns(d[8:], int(binary.BigEndian.Uint16(d[6:8])))
			sink += len(row)
			rows++
		} else if _, err := pglogrepl.Parse(d); err != nil { // begin, commit, relation: parsed as the relay does
			conn.Close(context.Background())
			return 0, err
		}
	}
	dur := time.Since(t0)
	_ = sink
	conn.Close(context.Background())
	// The walsender lets go of the slot a moment after the connection
	// ends; the relay would otherwise start as a standby.
	return dur, waitSlotFree(ctx, dsn, slot)
}

// tupleColumns copies an insert tuple's columns out of the WAL message.
func tupleColumns(rest []byte, n int) [][]byte {
	vals := make([][]byte, n)
	for i := 0; i < n && len(rest) > 0; i++ {
		kind := rest[0]
		rest = rest[1:]
		if (kind == pglogrepl.TupleDataTypeText || kind == pglogrepl.TupleDataTypeBinary) && len(rest) >= 4 {
			l := int(binary.BigEndian.Uint32(rest))
			if l < 0 || len(rest)-4 < l {
				return vals
			}
			vals[i] = append([]byte(nil), rest[4:4+l]...)
			rest = rest[4+l:]
		}
	}
	return vals
}

func waitSlotFree(ctx context.Context, dsn, slot string) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	for range 200 {
		var active bool
		if err := c.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active); err != nil {
			return fmt.Errorf("raw slot read: slot %s: %w", slot, err)
		}
		if !active {
			return nil
		}
		if err := retry.Wait(ctx, 25*time.Millisecond); err != nil {
			return err
		}
	}
	return errors.New("raw slot read: the slot stayed active 5 s after the read")
}

// rawTableRead reads the outbox table's rows in the polling source's
// order, every column, in one query: the polling source's baseline.
func rawTableRead(ctx context.Context, dsn string, n int) (time.Duration, error) {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer c.Close(context.Background())
	t0 := time.Now()
	rows, err := c.Query(ctx, `SELECT * FROM outbox ORDER BY txid, position`, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return 0, fmt.Errorf("raw table read: %w", err)
	}
	got, sink := 0, 0
	for rows.Next() {
		for _, v := range rows.RawValues() {
			sink += len(append([]byte(nil), v...))
		}
		got++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("raw table read: %w", err)
	}
	if got < n {
		return 0, fmt.Errorf("raw table read: %d rows, want %d", got, n)
	}
	_ = sink
	return time.Since(t0), nil
}

// rawSQLiteRead reads the outbox table's rows in position order, every
// column the SQLite source reads into the Go types it scans them into, in
// one query: the SQLite source's baseline, the driver's cost per row.
func rawSQLiteRead(ctx context.Context, db *sql.DB, n int) (time.Duration, error) {
	t0 := time.Now()
	rows, err := db.QueryContext(ctx, `SELECT position, id, aggregatetype, aggregateid, type, sequence, payload, headers, timestamp FROM outbox ORDER BY position`)
	if err != nil {
		return 0, fmt.Errorf("raw table read: %w", err)
	}
	defer rows.Close()
	got := 0
	for rows.Next() {
		var pos, seq, ts int64
		var id, aggType, aggID, typ, payload, headers string
		if err := rows.Scan(&pos, &id, &aggType, &aggID, &typ, &seq, &payload, &headers, &ts); err != nil {
			return 0, fmt.Errorf("raw table read: %w", err)
		}
		got++
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("raw table read: %w", err)
	}
	if got < n {
		return 0, fmt.Errorf("raw table read: %d rows, want %d", got, n)
	}
	return time.Since(t0), nil
}
