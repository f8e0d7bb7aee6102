package inbox

import "time"

// queries are the inbox's statements in one dialect.
type queries struct {
	insertID, selectSeq, upsertSeq, cleanup string
	time                                    func(time.Time) any
}

var postgresQueries = queries{
	insertID: `INSERT INTO outbox_inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)
		ON CONFLICT (consumer, event_id) DO NOTHING`,
	// FOR UPDATE: two transactions of one aggregate (a rebalance hands a
	// partition over mid-batch) take turns instead of both reading the
	// same previous sequence.
	selectSeq: `SELECT sequence FROM outbox_inbox_sequences
		WHERE consumer = $1 AND aggregatetype = $2 AND aggregateid = $3 FOR UPDATE`,
	upsertSeq: `INSERT INTO outbox_inbox_sequences (consumer, aggregatetype, aggregateid, sequence, updated_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (consumer, aggregatetype, aggregateid) DO UPDATE
		SET sequence = excluded.sequence, updated_at = excluded.updated_at
		WHERE outbox_inbox_sequences.sequence < excluded.sequence`,
	// SKIP LOCKED: cleanup never waits on a consumer's transaction.
	cleanup: `DELETE FROM outbox_inbox WHERE (consumer, event_id) IN (
		SELECT consumer, event_id FROM outbox_inbox WHERE consumer = $1 AND processed_at < $2
		ORDER BY processed_at LIMIT $3 FOR UPDATE SKIP LOCKED)`,
	time: func(t time.Time) any { return t },
}

var sqliteQueries = queries{
	insertID: `INSERT INTO outbox_inbox (consumer, event_id, processed_at) VALUES (?, ?, ?)
		ON CONFLICT (consumer, event_id) DO NOTHING`,
	// SQLite has one writer at a time: a write transaction holds the
	// whole database.
	selectSeq: `SELECT sequence FROM outbox_inbox_sequences
		WHERE consumer = ? AND aggregatetype = ? AND aggregateid = ?`,
	upsertSeq: `INSERT INTO outbox_inbox_sequences (consumer, aggregatetype, aggregateid, sequence, updated_at)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (consumer, aggregatetype, aggregateid) DO UPDATE
		SET sequence = excluded.sequence, updated_at = excluded.updated_at
		WHERE outbox_inbox_sequences.sequence < excluded.sequence`,
	cleanup: `DELETE FROM outbox_inbox WHERE rowid IN (
		SELECT rowid FROM outbox_inbox WHERE consumer = ? AND processed_at < ?
		ORDER BY processed_at LIMIT ?)`,
	time: func(t time.Time) any { return t.UnixMicro() },
}
