package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-dev/outbox/inbox"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/mapping"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/pgxoutbox"
	"github.com/outbox-dev/outbox/relay"
	"github.com/outbox-dev/outbox/sqloutbox"
	"github.com/outbox-dev/outbox/store/poll"
	"github.com/outbox-dev/outbox/store/postgres"
	"github.com/outbox-dev/outbox/store/sqlite"
)

// Config configures the service.
type Config struct {
	HTTP    string   // API address
	DB      string   // postgres://... or a SQLite file
	Brokers []string // Kafka; empty: an in-process broker
	// OwnTable (SQLite) writes each event by plain SQL into the service's
	// own Debezium-layout table user_events, which the relay reads through
	// a mapping, instead of appending to outbox's table with sqloutbox.
	OwnTable bool
	// NoRelay leaves relaying to a standalone `outbox relay`.
	NoRelay bool
	// Topic is where user events go and the mailer reads (default Topic);
	// another one needs the same topic in the standalone relay's
	// route.topic.replacement (or --topic-template).
	Topic string
	// Group is the mailer's consumer group (default "signup-mailer").
	Group  string
	Logger *slog.Logger
}

// Topic is where user events go by default (outbox's default routing, and
// the mapping's default route.topic.replacement).
const Topic = "outbox.event.user"

// UserEventsMapping is the mapping of user_events: Debezium's default
// column names, so only the table and the topic are given.
var UserEventsMapping = map[string]string{
	"table.name":              "user_events",
	"route.topic.replacement": "outbox.event.${routedByValue}",
}

// Service is the sign-up service: the API, the relay and the mailer.
type Service struct {
	cfg      Config
	pg       *pgxpool.Pool // PostgreSQL: the service's own pool
	db       *sql.DB       // SQLite
	brokers  []string
	ln       net.Listener
	srv      *http.Server
	relay    *relay.Relay
	mailer   *kgo.Client
	process  inbox.Processor
	closers  []func()
	serveErr chan error
}

// New opens the database, creates the service's tables and outbox's (no
// orders table), and builds the relay and the mailer.
func New(ctx context.Context, cfg Config) (_ *Service, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Topic == "" {
		cfg.Topic = Topic
	}
	if cfg.Group == "" {
		cfg.Group = "signup-mailer"
	}
	s := &Service{cfg: cfg, brokers: cfg.Brokers}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if len(s.brokers) == 0 {
		b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Port: 0})
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, func() { b.Close() })
		s.brokers = b.Addrs()
	}
	var src outbox.Source
	var dead outbox.DeadLetterStore
	if strings.HasPrefix(cfg.DB, "postgres://") || strings.HasPrefix(cfg.DB, "postgresql://") {
		src, dead, err = s.openPostgres(ctx)
	} else {
		src, dead, err = s.openSQLite(ctx)
	}
	if err != nil {
		return nil, err
	}
	if !cfg.NoRelay {
		// Every event of this service is a user's: one topic.
		pub, err := kafka.NewPublisher(kafka.Config{Brokers: s.brokers, TopicTemplate: cfg.Topic})
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, func() { pub.Close() })
		if s.relay, err = relay.New(src, pub, dead, relay.Config{Logger: cfg.Logger}); err != nil {
			return nil, err
		}
	}
	// The mailer: a consumer group, offsets committed by inbox.Run after
	// each record's transaction.
	if s.mailer, err = kgo.NewClient(kgo.SeedBrokers(s.brokers...), kgo.ConsumerGroup(cfg.Group), kgo.ConsumeTopics(cfg.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(),
		kgo.AllowAutoTopicCreation(), kgo.FetchMaxWait(100*time.Millisecond)); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.mailer.Close)
	if s.ln, err = net.Listen("tcp", cfg.HTTP); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /signups", s.signUp)
	mux.HandleFunc("GET /users/{id}/emails", s.emails)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

const usersTable = `CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS welcome_emails (user_id TEXT NOT NULL, email TEXT NOT NULL, sent_at TEXT NOT NULL)`

func (s *Service) openPostgres(ctx context.Context) (outbox.Source, outbox.DeadLetterStore, error) {
	if s.cfg.OwnTable {
		return nil, nil, errors.New("signup: -own-table is shown on SQLite only")
	}
	store, err := postgres.Open(ctx, s.cfg.DB)
	if err != nil {
		return nil, nil, err
	}
	s.closers = append(s.closers, func() { store.Close() })
	if _, err := store.MigrateOutboxOnly(ctx); err != nil {
		return nil, nil, err
	}
	if s.pg, err = pgxpool.New(ctx, s.cfg.DB); err != nil {
		return nil, nil, err
	}
	s.closers = append(s.closers, s.pg.Close)
	if _, err := s.pg.Exec(ctx, usersTable); err != nil {
		return nil, nil, err
	}
	if _, err := inbox.MigratePgx(ctx, s.pg); err != nil {
		return nil, nil, err
	}
	in, err := inbox.New(inbox.Config{Consumer: "signup-mailer", Dialect: inbox.Postgres})
	if err != nil {
		return nil, nil, err
	}
	s.process = in.PgxProcessor(s.pg, func(ctx context.Context, tx pgx.Tx, rec *kgo.Record, ev inbox.Event, _ inbox.Result) error {
		_, err := tx.Exec(ctx, `INSERT INTO welcome_emails (user_id, email, sent_at) VALUES ($1, $2, $3)`,
			ev.AggregateID, emailOf(rec.Value), time.Now().UTC().Format(time.RFC3339))
		return err
	})
	// Polling; store.CDC(postgres.CDCConfig{...}) streams instead.
	src, err := poll.NewSource(store, poll.Config{Interval: 20 * time.Millisecond, Lock: store.RelayLock("default")})
	return src, store, err
}

func (s *Service) openSQLite(ctx context.Context) (outbox.Source, outbox.DeadLetterStore, error) {
	store, err := sqlite.Open(ctx, s.cfg.DB, sqlite.Config{})
	if err != nil {
		return nil, nil, err
	}
	s.closers = append(s.closers, func() { store.Close() })
	if _, err := store.MigrateOutboxOnly(ctx); err != nil {
		return nil, nil, err
	}
	s.db = store.DB()
	if _, err := s.db.ExecContext(ctx, usersTable+`;
		CREATE TABLE IF NOT EXISTS user_events (
			seq           INTEGER PRIMARY KEY AUTOINCREMENT,
			id            TEXT NOT NULL UNIQUE,
			aggregatetype TEXT NOT NULL,
			aggregateid   TEXT NOT NULL,
			type          TEXT NOT NULL,
			payload       TEXT
		)`); err != nil {
		return nil, nil, err
	}
	if _, err := inbox.Migrate(ctx, s.db, inbox.SQLite); err != nil {
		return nil, nil, err
	}
	in, err := inbox.New(inbox.Config{Consumer: "signup-mailer", Dialect: inbox.SQLite})
	if err != nil {
		return nil, nil, err
	}
	s.process = in.SQLProcessor(s.db, func(ctx context.Context, tx *sql.Tx, rec *kgo.Record, ev inbox.Event, _ inbox.Result) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO welcome_emails (user_id, email, sent_at) VALUES (?, ?, ?)`,
			ev.AggregateID, emailOf(rec.Value), time.Now().UTC().Format(time.RFC3339))
		return err
	})
	lock := store.RelayLock("default")
	if !s.cfg.OwnTable {
		src, err := poll.NewSource(store, poll.Config{Interval: 20 * time.Millisecond, Wake: store.Wake(), Lock: lock})
		return src, store, err
	}
	keys := maps.Clone(UserEventsMapping)
	keys["route.topic.replacement"] = s.cfg.Topic
	m, err := mapping.Parse(keys)
	if err != nil {
		return nil, nil, err
	}
	table, err := store.Table(ctx, sqlite.TableConfig{Mapping: &m})
	if err != nil {
		return nil, nil, err
	}
	src, err := poll.NewSource(table, poll.Config{Interval: 20 * time.Millisecond, Lock: lock})
	return src, store, err
}

// Signup is the event's payload.
type Signup struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
}

func emailOf(payload []byte) string {
	var s Signup
	json.Unmarshal(payload, &s)
	return s.Email
}

// signUp writes the user and its UserSignedUp event in one transaction.
func (s *Service) signUp(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Email string `json:"email"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || !strings.Contains(in.Email, "@") {
		http.Error(w, "want {\"email\": \"...\"}", http.StatusBadRequest)
		return
	}
	id := uuid.NewString()
	ev := Signup{UserID: id, Email: in.Email}
	m, err := outbox.NewMessage("user", id, "UserSignedUp", 1, ev)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	ctx := r.Context()
	switch {
	case s.pg != nil:
		err = pgx.BeginFunc(ctx, s.pg, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO users (id, email) VALUES ($1, $2)`, id, in.Email); err != nil {
				return err
			}
			return pgxoutbox.Append(ctx, tx, m)
		})
	default:
		err = s.inSQLTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, email) VALUES (?, ?)`, id, in.Email); err != nil {
				return err
			}
			if s.cfg.OwnTable { // plain SQL into the service's own table
				_, err := tx.ExecContext(ctx, `INSERT INTO user_events (id, aggregatetype, aggregateid, type, payload) VALUES (?, ?, ?, ?, ?)`,
					m.ID.String(), m.AggregateType, m.AggregateID, m.Type, string(m.Payload))
				return err
			}
			return sqloutbox.AppendSQLite(ctx, tx, m)
		})
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(ev)
}

func (s *Service) inSQLTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// emails answers how many welcome emails a user got: one, whatever Kafka
// delivered twice.
func (s *Service) emails(w http.ResponseWriter, r *http.Request) {
	var n int
	var err error
	if s.pg != nil {
		err = s.pg.QueryRow(r.Context(), `SELECT count(*) FROM welcome_emails WHERE user_id = $1`, r.PathValue("id")).Scan(&n)
	} else {
		err = s.db.QueryRowContext(r.Context(), `SELECT count(*) FROM welcome_emails WHERE user_id = ?`, r.PathValue("id")).Scan(&n)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprintf(w, "{\"welcome_emails\": %d}\n", n)
}

// Addr is the API's address.
func (s *Service) Addr() string { return s.ln.Addr().String() }

// Brokers are the Kafka brokers in use.
func (s *Service) Brokers() []string { return s.brokers }

// Serve runs the API, the relay (unless NoRelay) and the mailer until ctx
// ends.
func (s *Service) Serve(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	if s.relay != nil {
		wg.Go(func() { errs <- s.relay.Serve(ctx) })
	}
	wg.Go(func() { errs <- inbox.Run(ctx, s.mailer, s.process, inbox.RunConfig{Logger: s.cfg.Logger}) })
	wg.Go(func() {
		if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
			errs <- err
		}
	})
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	s.srv.Shutdown(shut)
	stop()
	wg.Wait()
	return err
}

// Close releases what New opened.
func (s *Service) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}
