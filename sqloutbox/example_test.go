package sqloutbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/sqloutbox"
	"github.com/outbox-dev/outbox/store/poll"
	"github.com/outbox-dev/outbox/store/sqlite"
)

// The whole path on SQLite, with the in-process Kafka-protocol broker:
// migrate, run the relay, write a row and its event in your transaction,
// read the record.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "sqloutbox")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// 1. Migrate: the outbox's tables beside your own.
	store, err := sqlite.Open(ctx, filepath.Join(dir, "app.db"), sqlite.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	if _, err := store.MigrateOutboxOnly(ctx); err != nil {
		log.Fatal(err)
	}
	db := store.DB()
	if _, err := db.ExecContext(ctx, `CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL)`); err != nil {
		log.Fatal(err)
	}

	// 2. Run the relay in this process.
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()
	pub, err := kafka.NewPublisher(kafka.Config{Brokers: broker.Addrs()})
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	src, err := poll.NewSource(store, poll.Config{Interval: 10 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	r, err := relay.New(src, pub, store, relay.Config{})
	if err != nil {
		log.Fatal(err)
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Serve(relayCtx) }()
	defer func() { stopRelay(); <-done }()

	// 3. Write a row and its event in one transaction of yours.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, email) VALUES (?, ?)`, "u-42", "ada@example.com"); err != nil {
		log.Fatal(err)
	}
	m, err := outbox.NewMessage("user", "u-42", "UserSignedUp", 1, map[string]string{"email": "ada@example.com"})
	if err != nil {
		log.Fatal(err)
	}
	m.Headers = map[string]string{"tenant": "acme"}
	if err := sqloutbox.AppendSQLite(ctx, tx, m); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}

	// 4. Read it as a consumer would.
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.Addrs()...), kgo.ConsumeTopics("outbox.event.user"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			log.Fatal(ctx.Err())
		}
		if fs.NumRecords() == 0 {
			continue
		}
		rec := fs.Records()[0]
		h := map[string]string{}
		for _, kv := range rec.Headers {
			h[kv.Key] = string(kv.Value)
		}
		fmt.Println(string(rec.Key), h["type"], h["sequence"], h["tenant"], string(rec.Value))
		return
	}
	// Output: u-42 UserSignedUp 1 acme {"email":"ada@example.com"}
}

// Appending to PostgreSQL through pgx's stdlib driver: the same call with
// the PostgreSQL statement.
func ExampleAppendPostgres() {
	ctx := context.Background()
	db, err := sql.Open("pgx", "postgres://app@db/app")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, email) VALUES ($1, $2)`, "u-42", "ada@example.com"); err != nil {
		log.Fatal(err)
	}
	m, err := outbox.NewMessage("user", "u-42", "UserSignedUp", 1, map[string]string{"email": "ada@example.com"})
	if err != nil {
		log.Fatal(err)
	}
	if err := sqloutbox.AppendPostgres(ctx, tx, m); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
}
