package pgxoutbox

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-dev/outbox/internal/appendsql"
	"github.com/outbox-dev/outbox/outbox"
)

// Append inserts msgs into the outbox inside tx, the caller's own
// transaction: they commit with the caller's rows or not at all.
//
// Each message is validated first (outbox.Message.Validate); the trace
// context and baggage of ctx, when it has any, are added to its headers
// (traceparent, tracestate, baggage) unless the message sets them itself.
//
// An aggregate's events are read back by the relay, with either source,
// in the order their transactions commit, whoever writes them: appends to
// one aggregate wait for each other's commit (a row lock on the
// aggregate, held to the end of tx). Under REPEATABLE READ or
// SERIALIZABLE, an append that would come after an event of the same
// aggregate committed since tx began fails with a serialization error
// (SQLSTATE 40001): retry the transaction, as for any other.
func Append(ctx context.Context, tx pgx.Tx, msgs ...outbox.Message) error {
	for _, m := range msgs {
		m, headers, err := appendsql.Prepare(ctx, m)
		if err != nil {
			return fmt.Errorf("pgxoutbox: %w", err)
		}
		if _, err := tx.Exec(ctx, appendsql.Postgres, appendsql.PgxArgs(m, headers)...); err != nil {
			return fmt.Errorf("pgxoutbox: append outbox message %s: %w", m.ID, err)
		}
	}
	return nil
}
