package sqloutbox

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/outbox-dev/outbox/internal/appendsql"
	"github.com/outbox-dev/outbox/outbox"
)

// AppendPostgres inserts msgs into the outbox of a PostgreSQL database
// inside tx, the caller's own transaction (opened with pgx's stdlib
// driver, "pgx", or any PostgreSQL driver): they commit with the caller's
// rows or not at all.
//
// Each message is validated first (outbox.Message.Validate); the trace
// context and baggage of ctx, when it has any, are added to its headers
// (traceparent, tracestate, baggage) unless the message sets them itself.
//
// An aggregate's events are read back by the relay in the order their
// transactions commit: appends to one aggregate wait for each other's
// commit. Under REPEATABLE READ or SERIALIZABLE, an append that would
// come after an event of the same aggregate committed since tx began
// fails with a serialization error (SQLSTATE 40001): retry the
// transaction.
func AppendPostgres(ctx context.Context, tx *sql.Tx, msgs ...outbox.Message) error {
	for _, m := range msgs {
		m, headers, err := appendsql.Prepare(ctx, m)
		if err != nil {
			return fmt.Errorf("sqloutbox: %w", err)
		}
		if _, err := tx.ExecContext(ctx, appendsql.Postgres, appendsql.TextArgs(m, headers)...); err != nil {
			return fmt.Errorf("sqloutbox: append outbox message %s: %w", m.ID, err)
		}
	}
	return nil
}

// AppendSQLite inserts msgs into the outbox of a SQLite database inside
// tx, the caller's own transaction (modernc.org/sqlite, or any SQLite
// driver): they commit with the caller's rows or not at all. Validation
// and trace context are as for AppendPostgres. SQLite has one writer at a
// time, so events are read back in commit order.
//
// Open the database in WAL mode with a busy timeout, and begin write
// transactions immediately (modernc.org/sqlite: _txlock=immediate), as
// sqlite.Open does: a transaction that reads and then writes can
// otherwise fail with SQLITE_BUSY instead of waiting for the relay.
func AppendSQLite(ctx context.Context, tx *sql.Tx, msgs ...outbox.Message) error {
	for _, m := range msgs {
		m, headers, err := appendsql.Prepare(ctx, m)
		if err != nil {
			return fmt.Errorf("sqloutbox: %w", err)
		}
		if _, err := tx.ExecContext(ctx, appendsql.SQLite, appendsql.SQLiteArgs(m, headers)...); err != nil {
			return fmt.Errorf("sqloutbox: append outbox message %s: %w", m.ID, err)
		}
	}
	return nil
}
