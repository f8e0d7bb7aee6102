package pgxoutbox_test

import (
	"context"
	"log"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/pgxoutbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/store/postgres"
)

// A signup row and its event, in one transaction of your own pool.
func ExampleAppend() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@db/app")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO users (id, email) VALUES ($1, $2)`, "u-42", "ada@example.com"); err != nil {
			return err
		}
		m, err := outbox.NewMessage("user", "u-42", "UserSignedUp", 1, map[string]string{"email": "ada@example.com"})
		if err != nil {
			return err
		}
		m.Headers = map[string]string{"tenant": "acme"} // reaches the Kafka record as a header
		return pgxoutbox.Append(ctx, tx, m)
	})
	if err != nil {
		log.Fatal(err)
	}
}

// The whole path: migrate the outbox beside your tables, capture it with
// logical replication, and relay it to Kafka from your own process.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, err := postgres.Open(ctx, "postgres://app@db/app")
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	if _, err := store.MigrateOutboxOnly(ctx); err != nil {
		log.Fatal(err)
	}
	src, err := store.CDC(postgres.CDCConfig{Slot: "app_outbox"})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := src.Setup(ctx); err != nil { // before the first write
		log.Fatal(err)
	}
	pub, err := kafka.NewPublisher(kafka.Config{Brokers: []string{"kafka:9092"}})
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	r, err := relay.New(src, pub, store, relay.Config{})
	if err != nil {
		log.Fatal(err)
	}
	go r.Serve(ctx)

	err = pgx.BeginFunc(ctx, store.Pool(), func(tx pgx.Tx) error {
		m, err := outbox.NewMessage("user", "u-42", "UserSignedUp", 1, map[string]string{"email": "ada@example.com"})
		if err != nil {
			return err
		}
		return pgxoutbox.Append(ctx, tx, m)
	})
	if err != nil {
		log.Fatal(err)
	}
}
