package relay

import "github.com/outbox-dev/outbox/outbox"

// The engine's names for the ports, which package outbox declares so that
// adapters implement them without importing the engine (no store or
// publisher imports relay). Adapters and their users write outbox.X.
type (
	Position        = outbox.Position
	Record          = outbox.Record
	Source          = outbox.Source
	Cursor          = outbox.Cursor
	Publisher       = outbox.Publisher
	Fencer          = outbox.Fencer
	BrokerWatcher   = outbox.BrokerWatcher
	DeadLetterStore = outbox.DeadLetterStore
	ActionRequester = outbox.ActionRequester
)

var (
	ErrNotParked = outbox.ErrNotParked
	ErrNotFound  = outbox.ErrNotFound
)
