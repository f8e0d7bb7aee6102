// Package sqloutbox appends outbox messages inside your own database/sql
// transaction, on PostgreSQL (pgx's stdlib driver, "pgx", or any other)
// and SQLite (modernc.org/sqlite), so your rows and the events about them
// commit together or not at all; the relay then publishes each event to
// Kafka, in commit order per aggregate. For pgx.Tx see package pgxoutbox.
//
// The whole path on SQLite, in three steps (on PostgreSQL only the store
// differs: see pgxoutbox). Example runs it end to end.
//
// # 1. Migrate
//
// Hand the SQL files of package migrations
// (migrations/sqlite/outbox/*.sql) to your own migration tool, or let the
// store apply them (the outbox, checkpoints, dead letters; no orders
// table):
//
//	store, err := sqlite.Open(ctx, "app.db", sqlite.Config{})
//	_, err = store.MigrateOutboxOnly(ctx)
//
// # 2. Write in your transaction
//
// On store.DB(), or a handle of your own opened in WAL mode with
// _txlock=immediate and a busy timeout:
//
//	tx, err := db.BeginTx(ctx, nil)
//	_, err = tx.ExecContext(ctx, `INSERT INTO users (id, email) VALUES (?, ?)`, id, email)
//	m, err := outbox.NewMessage("user", id, "UserSignedUp", 1, signup)
//	err = sqloutbox.AppendSQLite(ctx, tx, m) // AppendPostgres on PostgreSQL
//	err = tx.Commit()
//
// # 3. Run the relay, in your process or as `outbox relay`
//
//	src, err := poll.NewSource(store, poll.Config{})
//	pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers})
//	r, err := relay.New(src, pub, store, relay.Config{})
//	go r.Serve(ctx)
//
// The relay polls every poll.Config.Interval (100 ms by default); a
// transaction committed through store.Transact also wakes it at once.
//
// # What consumers get
//
// Each event becomes a Kafka record keyed by its aggregate id on the topic
// outbox.event.{aggregatetype}, with headers id, type, aggregatetype,
// aggregateid, sequence and every header you set on the message. The
// trace context and baggage of the ctx you append with are stored as
// traceparent, tracestate and baggage headers. Consumers process each
// event once with package inbox.
package sqloutbox
