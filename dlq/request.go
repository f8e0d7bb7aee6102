package dlq

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/outbox-dev/outbox/outbox"
)

// ErrNotFirst is returned when a skip names an entry that is not its
// aggregate's first parked entry: only the failed message can be skipped.
var ErrNotFirst = errors.New("not the aggregate's first parked message")

// ErrReplayLimit is returned when an aggregate's failed message has been
// replayed MaxReplays times already: replaying it again would loop.
var ErrReplayLimit = errors.New("replay limit reached")

// RequestOptions tune an operator request.
type RequestOptions struct {
	// Reason is recorded with the request and on every entry it resolves.
	Reason string
	// DryRun computes the plan and records nothing.
	DryRun bool
	// MaxReplays refuses a replay once the aggregate's first parked message
	// was replayed this many times (default 3). Skip is never refused.
	MaxReplays int
	// Entry, when set, is the dead-letter entry the operator acts on: it
	// must still be parked, and for a skip it must be the aggregate's
	// first parked entry (ErrNotFirst otherwise).
	Entry int64
}

// Plan is what a request will do, in the order it will do it.
type Plan struct {
	Aggregate outbox.AggregateKey `json:"aggregate"`
	Action    outbox.Action       `json:"action"`
	DryRun    bool                `json:"dry_run"`
	// Entry is the entry the request names: the aggregate's first parked
	// entry when it was made. Run again after an interruption, the
	// request skips (or first republishes) this entry and no other.
	Entry     int64               `json:"entry"`
	Skip      []outbox.DeadLetter `json:"skip"`
	Republish []outbox.DeadLetter `json:"republish"`
}

// Request asks the relay owning the store to replay or skip a parked
// aggregate. The relay carries it out inside the aggregate's lane; call
// the relay's Poke to have it look at once.
func Request(ctx context.Context, s outbox.ActionRequester, key outbox.AggregateKey, action outbox.Action, opts RequestOptions) (Plan, error) {
	if action != outbox.ActionReplay && action != outbox.ActionSkip {
		return Plan{}, fmt.Errorf("dlq: unknown action %q (want replay or skip)", action)
	}
	if opts.MaxReplays == 0 {
		opts.MaxReplays = 3
	}
	entries, err := s.ParkedMessages(ctx, key)
	if err != nil {
		return Plan{}, fmt.Errorf("dlq: load parked messages of %s: %w", key, err)
	}
	if len(entries) == 0 {
		return Plan{}, fmt.Errorf("dlq: %s: %w", key, outbox.ErrNotParked)
	}
	head := entries[0]
	if opts.Entry != 0 {
		i := slices.IndexFunc(entries, func(d outbox.DeadLetter) bool { return d.ID == opts.Entry })
		switch {
		case i < 0:
			return Plan{}, fmt.Errorf("dlq: dead letter %d of %s: %w", opts.Entry, key, outbox.ErrNotParked)
		case i > 0 && action == outbox.ActionSkip:
			return Plan{}, fmt.Errorf("dlq: dead letter %d of %s: only the first parked message (%d) can be skipped: %w",
				opts.Entry, key, head.ID, ErrNotFirst)
		}
	}
	plan := Plan{Aggregate: key, Action: action, DryRun: opts.DryRun, Entry: head.ID, Republish: entries}
	if action == outbox.ActionSkip {
		plan.Skip, plan.Republish = entries[:1], entries[1:]
	} else if head.ReplayCount >= opts.MaxReplays {
		return plan, fmt.Errorf("dlq: %s: event %s was replayed %d times; skip it or fix it: %w",
			key, head.Message.ID, head.ReplayCount, ErrReplayLimit)
	}
	if opts.DryRun {
		return plan, nil
	}
	if err := s.RequestAction(ctx, key, outbox.ActionRequest{Action: action, Entry: head.ID, Reason: opts.Reason}); err != nil {
		return plan, fmt.Errorf("dlq: request %s of %s: %w", action, key, err)
	}
	return plan, nil
}
