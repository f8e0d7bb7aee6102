// Package inbox lets a consumer process each outbox event once, although
// Kafka delivers it at least once (a relay or a consumer that crashed
// sends or reads it again, a rebalance hands a partition over mid-batch).
//
// The consumer records each event's id inside the transaction that
// processes it, in its own database (PostgreSQL through pgx or
// database/sql, or SQLite); an id already recorded is skipped. Because
// the record and the consumer's writes commit together, an event is
// either processed and recorded, or neither, and delivered again.
//
//	in, err := inbox.New(inbox.Config{Consumer: "billing", Dialect: inbox.Postgres, TrackSequences: true})
//	_, err = inbox.Migrate(ctx, db, inbox.Postgres) // or the files in migrations/postgres/inbox
//
//	tx, err := db.BeginTx(ctx, nil)
//	ev, err := inbox.EventFromRecord(rec)
//	res, err := in.Record(ctx, tx, ev)
//	if !res.Duplicate {
//		// process ev in tx
//	}
//	err = tx.Commit()
//
// With TrackSequences the inbox also keeps each aggregate's highest
// sequence and reports what arrives out of order: a Gap (sequences
// missing before this event) or a Regression (an older event after a
// newer one, which a topic per event type or a replayed dead letter can
// cause). It reports; the handler decides (wait, refetch, ignore a stale
// update).
//
// Run is the franz-go consumer loop: poll, process each record in a
// transaction of its own with the inbox (SQLProcessor, PgxProcessor),
// then commit the offsets of what was processed. Cleanup deletes ids
// older than a retention window.
package inbox
