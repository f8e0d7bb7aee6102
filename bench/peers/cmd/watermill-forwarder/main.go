// Command watermill-forwarder is the Watermill peer's relay, run as its own
// OS process so that the driver can read its CPU time: watermill's
// components/forwarder reading the SQL "outbox" topic (watermill-sql, the
// default PostgreSQL schema and offsets adapter) and publishing each
// unwrapped message to Kafka (watermill-kafka, a Sarama sync producer with
// acks=all and the idempotent producer), keyed by the aggregate id.
//
// Configuration follows Watermill's forwarder documentation and its
// transactional-events-forwarder example: the subscriber with
// InitializeSchema, the forwarder with its defaults, the Kafka publisher
// from DefaultSaramaSyncPublisherConfig. What is changed is said where it
// is changed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outbox-dev/outbox/bench/peers/internal/wm"
)

func main() {
	dsn := flag.String("dsn", "", "PostgreSQL DSN of the database holding the outbox topic")
	brokers := flag.String("brokers", "", "Kafka brokers host:port,...")
	pollInterval := flag.Duration("poll-interval", 0, "watermill-sql subscriber PollInterval (0: its default, 1s)")
	flag.Parse()
	if *dsn == "" || *brokers == "" {
		fmt.Fprintln(os.Stderr, "usage: watermill-forwarder -dsn postgres://... -brokers host:port")
		os.Exit(2)
	}
	if err := run(*dsn, strings.Split(*brokers, ","), *pollInterval); err != nil {
		fmt.Fprintln(os.Stderr, "watermill-forwarder:", err)
		os.Exit(1)
	}
}

func run(dsn string, brokers []string, pollInterval time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger := watermill.NewStdLogger(false, false)

	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()

	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(pool), wsql.SubscriberConfig{
		SchemaAdapter:    wm.Schema(),
		OffsetsAdapter:   wm.Offsets(),
		InitializeSchema: true,
		PollInterval:     pollInterval, // 0 keeps watermill's default
	}, logger)
	if err != nil {
		return err
	}

	saramaCfg := kafka.DefaultSaramaSyncPublisherConfig()
	// Changed from watermill's defaults, for the comparison's conditions:
	// acks=all and the idempotent producer (Sarama requires one request in
	// flight per connection for it).
	saramaCfg.Producer.RequiredAcks = sarama.WaitForAll
	saramaCfg.Producer.Idempotent = true
	saramaCfg.Net.MaxOpenRequests = 1
	// Kafka 4 removed the protocol versions of Kafka < 2.1 (KIP-896);
	// watermill's default pins V1_0_0_0.
	saramaCfg.Version = sarama.V2_1_0_0

	pub, err := kafka.NewPublisher(kafka.PublisherConfig{
		Brokers: brokers,
		// Watermill's Kafka docs: a partitioning marshaler keeps messages
		// with one key on one partition, in order.
		Marshaler: kafka.NewWithPartitioningMarshaler(func(_ string, msg *message.Message) (string, error) {
			return msg.Metadata.Get(wm.KeyMetadata), nil
		}),
		OverwriteSaramaConfig: saramaCfg,
	}, logger)
	if err != nil {
		return err
	}

	fwd, err := forwarder.NewForwarder(sub, pub, logger, forwarder.Config{ForwarderTopic: wm.ForwarderTopic})
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		_ = fwd.Close()
	}()
	err = fwd.Run(ctx)
	_ = pub.Close()
	return err
}
