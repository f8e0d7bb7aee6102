// Package appendsql is the one implementation of appending an outbox
// message in SQL, shared by the stores and the public writers (pgxoutbox,
// sqloutbox), so every caller keeps the same rules: validation, trace
// context from the caller's context, and on PostgreSQL the aggregate head
// that orders an aggregate's events by commit (migration 0005).
package appendsql

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/outbox-dev/outbox/internal/w3c"
	"github.com/outbox-dev/outbox/outbox"
)

// AggregateHead is a CTE named h that raises and returns the ordering
// txid of an aggregate's next event: the greater of this transaction's id
// and that of the aggregate's previous event (migration 0005 says why).
// The upsert's row lock serialises appends to one aggregate until commit,
// so its events' txids follow commit order. from, when not empty, is a
// CTE that must return a row for the head to be written (an update that
// matched).
func AggregateHead(typ, id, from string) string {
	src := "VALUES (" + typ + "::text, " + id + "::text, pg_current_xact_id())"
	if from != "" {
		src = "SELECT " + typ + "::text, " + id + "::text, pg_current_xact_id() FROM " + from
	}
	return `h AS (
	INSERT INTO outbox_aggregate_heads AS head (aggregatetype, aggregateid, txid) ` + src + `
	ON CONFLICT (aggregatetype, aggregateid) DO UPDATE SET txid = greatest(head.txid, excluded.txid)
	RETURNING txid
)`
}

// Postgres appends one message: $1 id, $2 aggregatetype, $3 aggregateid,
// $4 type, $5 sequence, $6 payload, $7 headers, $8 timestamp.
var Postgres = `WITH ` + AggregateHead("$2", "$3", "") + `
INSERT INTO outbox (id, aggregatetype, aggregateid, type, sequence, payload, headers, timestamp, txid)
SELECT $1::uuid, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, txid FROM h`

// SQLite appends one message, with the same arguments as Postgres.
const SQLite = `INSERT INTO outbox (id, aggregatetype, aggregateid, type, sequence, payload, headers, timestamp)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`

// HeadersJSON encodes headers as the JSON object both schemas keep.
func HeadersJSON(h map[string]string) ([]byte, error) {
	if len(h) == 0 {
		return []byte("{}"), nil
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encode headers: %w", err)
	}
	return b, nil
}

// Prepare validates m and returns it with the trace context of ctx in its
// headers (see w3c.Inject), and those headers encoded.
func Prepare(ctx context.Context, m outbox.Message) (outbox.Message, []byte, error) {
	if err := m.Validate(); err != nil {
		return m, nil, err
	}
	m = w3c.Inject(ctx, m)
	headers, err := HeadersJSON(m.Headers)
	if err != nil {
		return m, nil, fmt.Errorf("outbox message %s: %w", m.ID, err)
	}
	return m, headers, nil
}

// PgxArgs are Postgres's arguments for pgx, which encodes the id and the
// JSON natively.
func PgxArgs(m outbox.Message, headers []byte) []any {
	return []any{m.ID, m.AggregateType, m.AggregateID, m.Type, m.Sequence, []byte(m.Payload), headers, m.Timestamp}
}

// TextArgs are the arguments for database/sql, as text where a driver may
// not know the column's type (the id, the JSON), so any PostgreSQL driver
// takes them.
func TextArgs(m outbox.Message, headers []byte) []any {
	return []any{m.ID.String(), m.AggregateType, m.AggregateID, m.Type, m.Sequence, string(m.Payload), string(headers), m.Timestamp}
}

// SQLiteArgs are SQLite's arguments: the timestamp in unix microseconds.
func SQLiteArgs(m outbox.Message, headers []byte) []any {
	return []any{m.ID.String(), m.AggregateType, m.AggregateID, m.Type, m.Sequence, string(m.Payload), string(headers), m.Timestamp.UnixMicro()}
}
