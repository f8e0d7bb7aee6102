package scylla

import (
	"context"
	"time"

	"github.com/gocql/gocql"
)

// cqlLease implements leaseStore with lightweight transactions.
type cqlLease struct {
	s  *gocql.Session
	ks string
}

func (c cqlLease) read(ctx context.Context, name string) (leaseRecord, bool, error) {
	var r leaseRecord
	err := c.s.Query(`SELECT owner, epoch, expires FROM `+c.ks+`.outbox_relay_lease WHERE name = ?`, name).
		WithContext(ctx).SerialConsistency(gocql.LocalSerial).Consistency(gocql.LocalSerial).Scan(&r.Owner, &r.Epoch, &r.Expires)
	if err == gocql.ErrNotFound {
		return r, false, nil
	}
	return r, err == nil, err
}

func (c cqlLease) create(ctx context.Context, name string, r leaseRecord) (bool, error) {
	return c.s.Query(`INSERT INTO `+c.ks+`.outbox_relay_lease (name, owner, epoch, expires) VALUES (?, ?, ?, ?) IF NOT EXISTS`,
		name, r.Owner, r.Epoch, r.Expires).WithContext(ctx).MapScanCAS(map[string]any{})
}

func (c cqlLease) take(ctx context.Context, name string, prev, next leaseRecord, now time.Time) (bool, error) {
	return c.s.Query(`UPDATE `+c.ks+`.outbox_relay_lease SET owner = ?, epoch = ?, expires = ? WHERE name = ? IF epoch = ? AND expires < ?`,
		next.Owner, next.Epoch, next.Expires, name, prev.Epoch, now).WithContext(ctx).MapScanCAS(map[string]any{})
}

func (c cqlLease) renew(ctx context.Context, name string, r leaseRecord) (bool, error) {
	return c.s.Query(`UPDATE `+c.ks+`.outbox_relay_lease SET expires = ? WHERE name = ? IF owner = ? AND epoch = ?`,
		r.Expires, name, r.Owner, r.Epoch).WithContext(ctx).MapScanCAS(map[string]any{})
}

// cqlProgress implements progressStore; every write is conditional on the
// stored epoch, so a fenced-off relay cannot move progress.
type cqlProgress struct {
	s    *gocql.Session
	ks   string
	name string
}

func (c cqlProgress) generation(ctx context.Context) (time.Time, error) {
	var gen time.Time
	err := c.s.Query(`SELECT generation FROM `+c.ks+`.outbox_cdc_generation WHERE name = ?`, c.name).WithContext(ctx).Scan(&gen)
	if err == gocql.ErrNotFound {
		return time.Time{}, nil
	}
	return gen, err
}

func (c cqlProgress) setGeneration(ctx context.Context, gen time.Time, epoch int64) (bool, error) {
	if ok, err := c.s.Query(`INSERT INTO `+c.ks+`.outbox_cdc_generation (name, generation, epoch) VALUES (?, ?, ?) IF NOT EXISTS`,
		c.name, gen, epoch).WithContext(ctx).MapScanCAS(map[string]any{}); err != nil || ok {
		return ok, err
	}
	return c.s.Query(`UPDATE `+c.ks+`.outbox_cdc_generation SET generation = ?, epoch = ? WHERE name = ? IF epoch <= ?`,
		gen, epoch, c.name, epoch).WithContext(ctx).MapScanCAS(map[string]any{})
}

func (c cqlProgress) startTime(ctx context.Context) (time.Time, error) {
	var at time.Time
	err := c.s.Query(`SELECT start_time FROM `+c.ks+`.outbox_cdc_generation WHERE name = ?`, c.name).WithContext(ctx).Scan(&at)
	if err == gocql.ErrNotFound {
		return time.Time{}, nil
	}
	return at, err
}

func (c cqlProgress) setStartTime(ctx context.Context, at time.Time, epoch int64) (bool, error) {
	if ok, err := c.s.Query(`INSERT INTO `+c.ks+`.outbox_cdc_generation (name, start_time, epoch) VALUES (?, ?, ?) IF NOT EXISTS`,
		c.name, at, epoch).WithContext(ctx).MapScanCAS(map[string]any{}); err != nil || ok {
		return ok, err
	}
	return c.s.Query(`UPDATE `+c.ks+`.outbox_cdc_generation SET start_time = ?, epoch = ? WHERE name = ? IF epoch <= ?`,
		at, epoch, c.name, epoch).WithContext(ctx).MapScanCAS(map[string]any{})
}

func (c cqlProgress) get(ctx context.Context, gen time.Time, table, stream string) (gocql.UUID, error) {
	var last gocql.UUID
	err := c.s.Query(`SELECT last_timeuuid FROM `+c.ks+`.outbox_cdc_progress WHERE generation = ? AND table_name = ? AND stream_id = ?`,
		gen, table, []byte(stream)).WithContext(ctx).Scan(&last)
	if err == gocql.ErrNotFound {
		return gocql.UUID{}, nil
	}
	return last, err
}

// save is one lightweight transaction once the stream's row exists (the
// update comes first: it is the common case), two when it creates it.
func (c cqlProgress) save(ctx context.Context, gen time.Time, table, stream string, last gocql.UUID, epoch int64) (bool, error) {
	prev := map[string]any{}
	ok, err := c.s.Query(`UPDATE `+c.ks+`.outbox_cdc_progress SET last_timeuuid = ?, epoch = ?
		WHERE generation = ? AND table_name = ? AND stream_id = ? IF epoch <= ?`,
		last, epoch, gen, table, []byte(stream), epoch).WithContext(ctx).MapScanCAS(prev)
	if err != nil || ok {
		return ok, err
	}
	if stored, found := prev["epoch"].(int64); found && stored != 0 {
		return false, nil // a newer epoch's row
	}
	ok, err = c.s.Query(`INSERT INTO `+c.ks+`.outbox_cdc_progress (generation, table_name, stream_id, last_timeuuid, epoch)
		VALUES (?, ?, ?, ?, ?) IF NOT EXISTS`, gen, table, []byte(stream), last, epoch).WithContext(ctx).MapScanCAS(map[string]any{})
	if err != nil || ok {
		return ok, err
	}
	// Created meanwhile by another epoch's write: decide against it.
	return c.s.Query(`UPDATE `+c.ks+`.outbox_cdc_progress SET last_timeuuid = ?, epoch = ?
		WHERE generation = ? AND table_name = ? AND stream_id = ? IF epoch <= ?`,
		last, epoch, gen, table, []byte(stream), epoch).WithContext(ctx).MapScanCAS(map[string]any{})
}
