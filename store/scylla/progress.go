package scylla

import (
	"context"
	"fmt"
	"time"

	"github.com/gocql/gocql"
	scyllacdc "github.com/scylladb/scylla-cdc-go"
)

// progressStore keeps per-stream progress; every write carries the lease
// epoch and is refused (applied false) when the stored epoch is newer.
type progressStore interface {
	generation(ctx context.Context) (time.Time, error)
	setGeneration(ctx context.Context, gen time.Time, epoch int64) (bool, error)
	// startTime is where a first start began reading (zero: none saved).
	startTime(ctx context.Context) (time.Time, error)
	setStartTime(ctx context.Context, at time.Time, epoch int64) (bool, error)
	get(ctx context.Context, gen time.Time, table, stream string) (gocql.UUID, error)
	save(ctx context.Context, gen time.Time, table, stream string, last gocql.UUID, epoch int64) (bool, error)
}

// fencedProgress is the scylla-cdc-go ProgressManager: progress is saved
// only by the lease holder, and storage refuses a stale holder's write.
type fencedProgress struct {
	store progressStore
	lease *Lease
	// loaded hears each stream's saved progress as the library loads it.
	loaded func(stream string, last gocql.UUID)
	// tracker, when set, is asked before a generation is saved.
	tracker *tracker
}

var _ scyllacdc.ProgressManagerWithStartTime = (*fencedProgress)(nil)

// GetApplicationReadStartTime is the point the first start chose (see
// Source.planStart); the library reads from it while no generation is
// saved.
func (p *fencedProgress) GetApplicationReadStartTime(ctx context.Context) (time.Time, error) {
	return p.store.startTime(ctx)
}

// SaveApplicationReadStartTime is called by the library only when neither
// a generation nor a start point is saved, which planStart prevents.
func (p *fencedProgress) SaveApplicationReadStartTime(ctx context.Context, at time.Time) error {
	epoch, err := p.lease.Epoch()
	if err != nil {
		return err
	}
	applied, err := p.store.setStartTime(ctx, at, epoch)
	if err != nil {
		return err
	}
	if !applied {
		return fmt.Errorf("scylla: start point write refused for epoch %d: %w", epoch, ErrLeaseLost)
	}
	return nil
}

func (p *fencedProgress) GetCurrentGeneration(ctx context.Context) (time.Time, error) {
	return p.store.generation(ctx)
}

// StartGeneration saves gen as the generation to resume from. The library
// calls it once every consumer of the previous generation has ended, and
// a consumer ends only when its rows are acknowledged, unless the cursor
// is closing: then, or when its context is gone, nothing is saved, or a
// restart would begin past rows the broker never acknowledged.
func (p *fencedProgress) StartGeneration(ctx context.Context, gen time.Time) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("scylla: generation %s not saved: %w", gen.Format(time.RFC3339), err)
	}
	if p.tracker != nil {
		if err := p.tracker.mayStartGeneration(); err != nil {
			return fmt.Errorf("scylla: generation %s not saved: %w", gen.Format(time.RFC3339), err)
		}
	}
	epoch, err := p.lease.Epoch()
	if err != nil {
		return err
	}
	applied, err := p.store.setGeneration(ctx, gen, epoch)
	if err != nil {
		return err
	}
	if !applied {
		return fmt.Errorf("scylla: generation write refused for epoch %d: %w", epoch, ErrLeaseLost)
	}
	return nil
}

func (p *fencedProgress) GetProgress(ctx context.Context, gen time.Time, table string, stream scyllacdc.StreamID) (scyllacdc.Progress, error) {
	last, err := p.store.get(ctx, gen, table, string(stream))
	if err == nil && p.loaded != nil {
		p.loaded(string(stream), last)
	}
	return scyllacdc.Progress{LastProcessedRecordTime: last}, err
}

func (p *fencedProgress) SaveProgress(ctx context.Context, gen time.Time, table string, stream scyllacdc.StreamID, progress scyllacdc.Progress) error {
	epoch, err := p.lease.Epoch()
	if err != nil {
		return err
	}
	applied, err := p.store.save(ctx, gen, table, string(stream), progress.LastProcessedRecordTime, epoch)
	if err != nil {
		return fmt.Errorf("scylla: save progress: %w", err)
	}
	if !applied {
		return fmt.Errorf("scylla: progress write refused for epoch %d (a newer relay owns the table): %w", epoch, ErrLeaseLost)
	}
	return nil
}
