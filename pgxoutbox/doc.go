// Package pgxoutbox appends outbox messages inside your own pgx
// transaction, so your rows and the events about them commit together or
// not at all; the relay then publishes each event to Kafka, in commit
// order per aggregate. For database/sql (pgx's stdlib driver, SQLite) see
// package sqloutbox.
//
// The whole path on PostgreSQL, in three steps.
//
// # 1. Migrate
//
// Hand the SQL files of package migrations
// (migrations/postgres/outbox/*.sql) to your own migration tool, or let
// the store apply them (the outbox, checkpoints, dead letters; no orders
// table):
//
//	store, err := postgres.Open(ctx, dsn)
//	_, err = store.MigrateOutboxOnly(ctx)
//
// With logical replication (the default capture), create the publication
// and the slot before the first event you want captured (a slot sees what
// commits after it exists). Polling, poll.NewSource(store, poll.Config{}),
// needs no replication rights.
//
//	src, err := store.CDC(postgres.CDCConfig{})
//	_, err = src.Setup(ctx)
//
// # 2. Write in your transaction
//
//	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
//		if _, err := tx.Exec(ctx, `INSERT INTO users (id, email) VALUES ($1, $2)`, id, email); err != nil {
//			return err
//		}
//		m, err := outbox.NewMessage("user", id, "UserSignedUp", 1, signup)
//		if err != nil {
//			return err
//		}
//		return pgxoutbox.Append(ctx, tx, m)
//	})
//
// # 3. Run the relay, in your process or as `outbox relay`
//
//	pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers})
//	r, err := relay.New(src, pub, store, relay.Config{})
//	go r.Serve(ctx)
//
// # What consumers get
//
// Each event becomes a Kafka record keyed by its aggregate id on the topic
// outbox.event.{aggregatetype} (kafka.Config.TopicTemplate), with headers
// id, type, aggregatetype, aggregateid, sequence and every header you set
// on the message. The trace context and baggage of the ctx you append
// with are stored as traceparent, tracestate and baggage headers, so
// consumers and the relay's spans (package tracing) join your trace.
// Consumers process each event once with package inbox.
package pgxoutbox
