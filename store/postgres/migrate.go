package postgres

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/outbox-dev/outbox/internal/migrate"
	"github.com/outbox-dev/outbox/migrations"
)

// Migrate applies the migrations not yet applied, the outbox's and the
// order service's, under an advisory lock so concurrent starts do not
// race, and reports how many.
func (s *Store) Migrate(ctx context.Context) (int, error) {
	orders, err := fs.Sub(orderMigrations, "migrations")
	if err != nil {
		return 0, err
	}
	return s.migrate(ctx, migrations.PostgresOutbox, orders)
}

// MigrateOutboxOnly applies the outbox's migrations not yet applied (the
// outbox table, checkpoints, dead letters; no orders table), for a
// service that writes its own tables and appends with pgxoutbox or
// sqloutbox. They are package migrations' PostgresOutbox files, recorded
// under the same versions, so a later Migrate adds only the order
// service's.
func (s *Store) MigrateOutboxOnly(ctx context.Context) (int, error) {
	return s.migrate(ctx, migrations.PostgresOutbox)
}

func (s *Store) migrate(ctx context.Context, sets ...fs.FS) (int, error) {
	files, err := migrate.Files(sets...)
	if err != nil {
		return 0, fmt.Errorf("postgres: %w", err)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("postgres: migrate: %w", err)
	}
	defer conn.Release()
	n, err := migrate.Pgx(ctx, conn, files)
	if err != nil {
		return n, fmt.Errorf("postgres: %w", err)
	}
	return n, nil
}
