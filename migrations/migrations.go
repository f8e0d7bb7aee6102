// Package migrations holds the SQL that creates what the outbox relay and
// the consumer inbox need, for PostgreSQL and SQLite, without the order
// service's tables: plain SQL files, to apply in name order with your own
// migration tool, or through the functions that apply them for you
// (postgres.Store.MigrateOutboxOnly, sqlite.Store.MigrateOutboxOnly,
// inbox.Migrate, inbox.MigratePgx).
//
// The files are in this directory of the repository:
//
//	migrations/postgres/outbox/*.sql   the outbox table, checkpoints, dead letters, aggregate heads
//	migrations/sqlite/outbox/*.sql
//	migrations/postgres/inbox/*.sql    the consumer inbox
//	migrations/sqlite/inbox/*.sql
//
// A file's number is its version, and each file records itself in
// outbox_schema_migrations as its last statement. So a database migrated
// by your own tool is one that outbox's runner (outbox migrate, the
// relay's start, the functions above) finds up to date: it applies only
// the files your tool has not, and never runs one twice. Numbers have gaps because the
// order service's migrations (2, 4) sit between the outbox's (1, 3, 5);
// apply the files in order and the gaps do not matter.
//
// With logical replication (the relay's cdc source) the publication and
// the slot are not in these files: postgres.CDCSource.Setup creates them,
// and must run before the first event you want captured is written.
package migrations

import (
	"embed"
	"io/fs"
)

//go:embed postgres sqlite
var files embed.FS

func sub(dir string) fs.FS {
	f, err := fs.Sub(files, dir)
	if err != nil {
		panic(err) // the directories are embedded above
	}
	return f
}

var (
	// PostgresOutbox creates the outbox and the relay's tables on PostgreSQL.
	PostgresOutbox = sub("postgres/outbox")
	// SQLiteOutbox creates the outbox and the relay's tables on SQLite.
	SQLiteOutbox = sub("sqlite/outbox")
	// PostgresInbox creates the consumer inbox on PostgreSQL.
	PostgresInbox = sub("postgres/inbox")
	// SQLiteInbox creates the consumer inbox on SQLite.
	SQLiteInbox = sub("sqlite/inbox")
)
