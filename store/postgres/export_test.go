package postgres

import "context"

// CountRows reports the rows in the order and outbox tables.
func (s *Store) CountRows(ctx context.Context) (orders, events int64, err error) {
	err = s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM outbox)`).Scan(&orders, &events)
	return orders, events, err
}
