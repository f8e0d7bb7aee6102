package relay

import "github.com/outbox-dev/outbox/outbox"

// Deprecated aliases: the ports now live in package outbox. They remain
// until the last adapter has moved; new code uses outbox.X.
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
