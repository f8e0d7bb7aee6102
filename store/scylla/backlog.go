package scylla

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/gocql/gocql"
)

// CDCBacklog is what the outbox table's CDC log holds past the relays'
// saved progress: the rows a relay starting now would read again (each an
// event to publish, or to publish once more), and the time of the oldest.
// It answers with no relay running, which the relay's own lag
// (Source.Lag) cannot: the backlog of a stopped relay, or what a crash
// would make the next one re-read (progress is saved at most once per
// CDCConfig.ProgressEvery). A stream's rows count from its saved
// progress, or from the saved generation's start (or the first start's
// point) when it has none; with nothing saved, every row counts.
//
// It scans the whole log and progress tables: for tests and tools, not
// for a metric scraped every few seconds from a cluster holding a day of
// log.
func (s *Store) CDCBacklog(ctx context.Context) (rows int64, oldest time.Time, err error) {
	table := s.keyspace + ".outbox_messages"
	p := cqlProgress{s.session, s.keyspace, table}
	gen, err := p.generation(ctx)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("scylla: CDC backlog: read the saved generation: %w", err)
	}
	floor := gen
	if floor.IsZero() {
		if floor, err = p.startTime(ctx); err != nil {
			return 0, time.Time{}, fmt.Errorf("scylla: CDC backlog: read the start point: %w", err)
		}
	}
	saved := map[string]gocql.UUID{}
	if !gen.IsZero() {
		iter := s.session.Query(`SELECT generation, table_name, stream_id, last_timeuuid FROM ` + s.keyspace + `.outbox_cdc_progress`).
			WithContext(ctx).PageSize(5000).Iter()
		var g time.Time
		var name string
		var stream []byte
		var last gocql.UUID
		for iter.Scan(&g, &name, &stream, &last) {
			if g.Equal(gen) && name == table {
				saved[string(stream)] = last
			}
		}
		if err := iter.Close(); err != nil {
			return 0, time.Time{}, fmt.Errorf("scylla: CDC backlog: read the saved progress: %w", err)
		}
	}
	iter := s.session.Query(`SELECT "cdc$stream_id", "cdc$time" FROM ` + table + cdcLogSuffix + ` BYPASS CACHE`).
		WithContext(ctx).PageSize(5000).Iter()
	var stream []byte
	var at gocql.UUID
	for iter.Scan(&stream, &at) {
		t := at.Time()
		if t.Before(floor) {
			continue // an earlier generation's, or before the first start's point
		}
		if last, ok := saved[string(stream)]; ok && !timeUUIDAfter(at, last) {
			continue
		}
		rows++
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	if err := iter.Close(); err != nil {
		return 0, time.Time{}, fmt.Errorf("scylla: CDC backlog: read the CDC log: %w", err)
	}
	return rows, oldest, nil
}

// timeUUIDAfter orders timeuuids by time, then by their other bytes.
func timeUUIDAfter(a, b gocql.UUID) bool {
	if ta, tb := a.Timestamp(), b.Timestamp(); ta != tb {
		return ta > tb
	}
	return bytes.Compare(a[8:], b[8:]) > 0
}
