package postgres

import (
	"context"

	"github.com/outbox-dev/outbox/outbox"
)

// CountRows reports the rows in the order and outbox tables.
func (s *Store) CountRows(ctx context.Context) (orders, events int64, err error) {
	err = s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM outbox)`).Scan(&orders, &events)
	return orders, events, err
}

// HandedRecords is how many records a CDC cursor holds for the relay.
func HandedRecords(c interface {
	Next(context.Context, int) ([]outbox.Record, error)
}) int {
	cur := c.(*cdcCursor)
	cur.mu.Lock()
	defer cur.mu.Unlock()
	return len(cur.handed)
}
