package dlq

import (
	"context"
	"errors"
	"fmt"

	"github.com/outbox-dev/outbox/outbox"
)

// Store is what the operator's dead-letter operations need of a store.
type Store interface {
	outbox.ActionRequester
	ListDeadLetters(ctx context.Context, f outbox.DeadLetterFilter) ([]outbox.DeadLetter, error)
	GetDeadLetter(ctx context.Context, id int64) (outbox.DeadLetter, error)
	ParkedAggregates(ctx context.Context) ([]outbox.ParkedAggregate, error)
}

// Ops are the operator's dead-letter operations: list, show, and replay
// or skip with a plan shown first. The HTTP API and the CLI both call
// them, so the rules (which entry a skip may name, the replay limit) live
// in one place. The running relay carries requests out; Poke, when set,
// asks it to look at once.
type Ops struct {
	Store Store
	// MaxReplays is the replay limit (default 3).
	MaxReplays int
	Poke       func()
}

// ErrResolved is returned for an action on a dead letter that was
// already replayed or skipped.
var ErrResolved = errors.New("dead letter already resolved")

// List returns dead letters matching f, oldest first.
func (o Ops) List(ctx context.Context, f outbox.DeadLetterFilter) ([]outbox.DeadLetter, error) {
	return o.Store.ListDeadLetters(ctx, f)
}

// Get returns one dead letter, or an error wrapping outbox.ErrNotFound.
func (o Ops) Get(ctx context.Context, id int64) (outbox.DeadLetter, error) {
	return o.Store.GetDeadLetter(ctx, id)
}

// Act requests a replay or a skip of the aggregate of dead letter id, which
// must be parked; a skip must name the aggregate's first parked entry
// (ErrNotFirst). With opts.DryRun it only returns the plan.
func (o Ops) Act(ctx context.Context, id int64, action outbox.Action, opts RequestOptions) (Plan, error) {
	dl, err := o.Store.GetDeadLetter(ctx, id)
	if err != nil {
		return Plan{}, err
	}
	if dl.Status != outbox.StatusParked {
		return Plan{}, fmt.Errorf("dlq: dead letter %d is already %s: %w", id, dl.Status, ErrResolved)
	}
	opts.Entry = id
	return o.request(ctx, dl.Message.Key(), action, opts)
}

// Refusal is an aggregate ReplayAll did not request, and why.
type Refusal struct {
	Aggregate outbox.AggregateKey `json:"aggregate"`
	Reason    string              `json:"reason"`
}

// ReplayAllResult is what ReplayAll requested and refused.
type ReplayAllResult struct {
	DryRun  bool      `json:"dry_run"`
	Plans   []Plan    `json:"plans"`
	Refused []Refusal `json:"refused"`
}

// ReplayAll requests a replay of every parked aggregate; those at the
// replay limit, or no longer parked, are refused and listed.
func (o Ops) ReplayAll(ctx context.Context, opts RequestOptions) (ReplayAllResult, error) {
	parked, err := o.Store.ParkedAggregates(ctx)
	if err != nil {
		return ReplayAllResult{}, err
	}
	res := ReplayAllResult{DryRun: opts.DryRun, Plans: []Plan{}, Refused: []Refusal{}}
	for _, pa := range parked {
		plan, err := o.request(ctx, pa.Key, outbox.ActionReplay, opts)
		switch {
		case err == nil:
			res.Plans = append(res.Plans, plan)
		case errors.Is(err, ErrReplayLimit) || errors.Is(err, outbox.ErrNotParked):
			res.Refused = append(res.Refused, Refusal{Aggregate: pa.Key, Reason: err.Error()})
		default:
			return res, err
		}
	}
	return res, nil
}

func (o Ops) request(ctx context.Context, key outbox.AggregateKey, action outbox.Action, opts RequestOptions) (Plan, error) {
	if opts.MaxReplays == 0 {
		opts.MaxReplays = o.MaxReplays
	}
	plan, err := Request(ctx, o.Store, key, action, opts)
	if err == nil && !opts.DryRun && o.Poke != nil {
		o.Poke()
	}
	return plan, err
}
