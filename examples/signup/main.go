// Command signup is an example service built only on outbox's public API:
// a user sign-up service on net/http that writes each user and its
// UserSignedUp event in one transaction (pgxoutbox on PostgreSQL,
// sqloutbox on SQLite, or plain SQL into its own Debezium-layout table
// with -own-table), runs the relay in the same process (package relay,
// the Kafka publisher, a polling source), and a mailer consumer that
// sends each welcome email once (package inbox). With -no-relay the
// standalone `outbox relay` does the relaying. See README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	var cfg Config
	var brokers string
	flag.StringVar(&cfg.HTTP, "http", "127.0.0.1:8081", "API address")
	flag.StringVar(&cfg.DB, "db", "signup.db", "postgres://... or a SQLite file")
	flag.StringVar(&brokers, "brokers", "", "Kafka brokers, comma-separated (default: an in-process broker)")
	flag.BoolVar(&cfg.OwnTable, "own-table", false, "SQLite: write events into the service's own table user_events, read through a mapping")
	flag.BoolVar(&cfg.NoRelay, "no-relay", false, "leave relaying to a standalone `outbox relay`")
	flag.StringVar(&cfg.Topic, "topic", Topic, "Kafka topic of the user events, which the mailer reads")
	flag.Parse()
	if brokers != "" {
		cfg.Brokers = strings.Split(brokers, ",")
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := New(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "signup:", err)
		os.Exit(1)
	}
	defer s.Close()
	cfg.Logger.Info("signup listening", "addr", s.Addr(), "brokers", strings.Join(s.Brokers(), ","))
	if err := s.Serve(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "signup:", err)
		os.Exit(1)
	}
}
