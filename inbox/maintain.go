package inbox

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outbox-dev/outbox/internal/migrate"
	"github.com/outbox-dev/outbox/migrations"
)

// Migrate creates the inbox tables on db when they are missing (package
// migrations' PostgresInbox or SQLiteInbox files, recorded in
// outbox_schema_migrations beside the outbox's, so one database can hold
// both) and reports how many files it applied.
func Migrate(ctx context.Context, db *sql.DB, d Dialect) (int, error) {
	var set = migrations.SQLiteInbox
	var md = migrate.SQLite
	switch d {
	case Postgres:
		set, md = migrations.PostgresInbox, migrate.Postgres
	case SQLite:
	default:
		return 0, fmt.Errorf("%w: Migrate needs Postgres or SQLite, got %s", ErrInvalidConfig, d)
	}
	files, err := migrate.Files(set)
	if err != nil {
		return 0, fmt.Errorf("inbox: %w", err)
	}
	n, err := migrate.SQL(ctx, db, md, files)
	if err != nil {
		return n, fmt.Errorf("inbox: %w", err)
	}
	return n, nil
}

// MigratePgx is Migrate on a pgx pool (PostgreSQL).
func MigratePgx(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	files, err := migrate.Files(migrations.PostgresInbox)
	if err != nil {
		return 0, fmt.Errorf("inbox: %w", err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("inbox: migrate: %w", err)
	}
	defer conn.Release()
	n, err := migrate.Pgx(ctx, conn, files)
	if err != nil {
		return n, fmt.Errorf("inbox: %w", err)
	}
	return n, nil
}

// cleanupBatch bounds each DELETE, so cleanup holds few locks at a time.
const cleanupBatch = 1000

// Cleanup deletes this consumer's ids processed more than retention ago,
// in batches, and reports how many. Call it now and then (an hour apart
// is plenty).
//
// An event delivered again after its id was deleted is processed again:
// keep ids longer than any redelivery can come (the topic's retention, or
// how far back a consumer group may be reset). With TrackSequences such
// an event is still reported as a Regression, as the aggregate's
// sequence is kept.
func (in *Inbox) Cleanup(ctx context.Context, db *sql.DB, retention time.Duration) (int64, error) {
	q, err := in.queries(in.cfg.Dialect)
	if err != nil {
		return 0, err
	}
	return in.cleanup(ctx, retention, q, func(ctx context.Context, args ...any) (int64, error) {
		res, err := db.ExecContext(ctx, q.cleanup, args...)
		if err != nil {
			return 0, err
		}
		return res.RowsAffected()
	})
}

// CleanupPgx is Cleanup on a pgx pool (PostgreSQL).
func (in *Inbox) CleanupPgx(ctx context.Context, pool *pgxpool.Pool, retention time.Duration) (int64, error) {
	return in.cleanup(ctx, retention, &postgresQueries, func(ctx context.Context, args ...any) (int64, error) {
		tag, err := pool.Exec(ctx, postgresQueries.cleanup, args...)
		return tag.RowsAffected(), err
	})
}

func (in *Inbox) cleanup(ctx context.Context, retention time.Duration, q *queries, del func(context.Context, ...any) (int64, error)) (int64, error) {
	if retention <= 0 {
		return 0, fmt.Errorf("%w: retention must be positive, got %s", ErrInvalidConfig, retention)
	}
	before := q.time(in.cfg.Now().Add(-retention))
	var total int64
	for {
		n, err := del(ctx, in.cfg.Consumer, before, cleanupBatch)
		total += n
		if err != nil {
			return total, fmt.Errorf("inbox: cleanup of %s: %w", in.cfg.Consumer, err)
		}
		if n < cleanupBatch {
			return total, nil
		}
	}
}
