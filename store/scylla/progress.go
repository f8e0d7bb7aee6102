package scylla

import (
	"context"
	"fmt"
	"time"

	"github.com/gocql/gocql"
	scyllacdc "github.com/scylladb/scylla-cdc-go"

	"github.com/outbox-dev/outbox/outbox"
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
	// refused, when set, hears every refused write at once, so the cursor
	// stops handing out records (the lease is lost).
	refused func(error)
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
		return p.refusal(ctx, "start point write", epoch)
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
		return p.refusal(ctx, "generation write", epoch)
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
		return p.refusal(ctx, "progress write", epoch)
	}
	return nil
}

// refusal is the error of a write refused for epoch: the lease is lost.
// Normally a newer relay holds it and this one restarts as a standby. But
// when the lease row still names this relay at epoch, the progress rows
// carry an epoch the lease table never handed out (it was reset or
// restored from a backup): every write would be refused after every
// restart, so the error is fatal, with what to do.
func (p *fencedProgress) refusal(ctx context.Context, what string, epoch int64) error {
	err := fmt.Errorf("scylla: %s refused for epoch %d (a newer relay owns the table): %w", what, epoch, ErrLeaseLost)
	if held, rerr := p.lease.heldInStore(ctx); rerr == nil && held {
		err = outbox.Fatal(fmt.Errorf("scylla: %s refused for epoch %d, yet the lease row %q names this relay at that epoch: "+
			"the CDC progress rows carry a newer epoch than the lease table ever handed out (was it reset or restored?), "+
			"so no restart can help. Stop every relay of the table, set the lease row's epoch above the largest epoch in "+
			"outbox_cdc_progress and outbox_cdc_generation, and start again: %w", what, epoch, p.lease.name, ErrLeaseLost))
	}
	if p.refused != nil {
		p.refused(err)
	}
	return err
}
