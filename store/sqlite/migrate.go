package sqlite

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/outbox-dev/outbox/internal/migrate"
	"github.com/outbox-dev/outbox/migrations"
)

// Migrate applies the migrations not yet applied, the outbox's and the
// order service's, each in its own transaction, and reports how many.
func (s *Store) Migrate(ctx context.Context) (int, error) {
	orders, err := fs.Sub(orderMigrations, "migrations")
	if err != nil {
		return 0, err
	}
	return s.migrate(ctx, migrations.SQLiteOutbox, orders)
}

// MigrateOutboxOnly applies the outbox's migrations not yet applied (the
// outbox table, checkpoints, dead letters; no orders table), for a
// service that writes its own tables and appends with
// sqloutbox.AppendSQLite. They are package migrations' SQLiteOutbox
// files, recorded under the same versions, so a later Migrate adds only
// the order service's.
func (s *Store) MigrateOutboxOnly(ctx context.Context) (int, error) {
	return s.migrate(ctx, migrations.SQLiteOutbox)
}

func (s *Store) migrate(ctx context.Context, sets ...fs.FS) (int, error) {
	files, err := migrate.Files(sets...)
	if err != nil {
		return 0, fmt.Errorf("sqlite: %w", err)
	}
	n, err := migrate.SQL(ctx, s.db, migrate.SQLite, files)
	if err != nil {
		return n, fmt.Errorf("sqlite: %w", err)
	}
	return n, nil
}
