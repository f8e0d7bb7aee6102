package inbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/inbox"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/outbox"
)

// A consumer that sends a welcome email once per signup, though the relay
// published the event twice: Run polls, SQLProcessor records each event in
// the consumer's transaction and calls the handler for new ones only.
func ExampleRun() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "inbox")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "mailer.db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := inbox.Migrate(ctx, db, inbox.SQLite); err != nil {
		log.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE emails (user_id TEXT NOT NULL, kind TEXT NOT NULL)`); err != nil {
		log.Fatal(err)
	}

	// The relay's side: one event, published twice (a relay restarted
	// before its checkpoint).
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
	signup, _ := outbox.NewMessage("user", "u-42", "UserSignedUp", 1, map[string]string{"email": "ada@example.com"})
	for range 2 {
		if err := pub.Publish(ctx, signup); err != nil {
			log.Fatal(err)
		}
	}

	// The consumer's side.
	done := make(chan struct{})
	seen := 0
	in, err := inbox.New(inbox.Config{Consumer: "mailer", Dialect: inbox.SQLite, OnProcessed: func(ev inbox.Event, res inbox.Result) {
		fmt.Println(ev.Type, ev.AggregateID, "duplicate:", res.Duplicate)
		if seen++; seen == 2 {
			close(done)
		}
	}})
	if err != nil {
		log.Fatal(err)
	}
	process := in.SQLProcessor(db, func(ctx context.Context, tx *sql.Tx, _ *kgo.Record, ev inbox.Event, _ inbox.Result) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO emails (user_id, kind) VALUES (?, 'welcome')`, ev.AggregateID)
		return err
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.Addrs()...), kgo.ConsumerGroup("mailer"), kgo.ConsumeTopics("outbox.event.user"),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- inbox.Run(runCtx, cl, process, inbox.RunConfig{}) }()
	<-done
	stop()
	if err := <-ran; err != nil {
		log.Fatal(err)
	}
	var emails int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM emails`).Scan(&emails); err != nil {
		log.Fatal(err)
	}
	fmt.Println("emails sent:", emails)
	// Output:
	// UserSignedUp u-42 duplicate: false
	// UserSignedUp u-42 duplicate: true
	// emails sent: 1
}
