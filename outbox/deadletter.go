package outbox

import "time"

// DeadLetterStatus is where a dead letter stands.
type DeadLetterStatus string

const (
	// StatusParked: waiting for an operator; its aggregate is parked.
	StatusParked DeadLetterStatus = "parked"
	// StatusReplayed: republished by a replay.
	StatusReplayed DeadLetterStatus = "replayed"
	// StatusSkipped: discarded by an operator; never published.
	StatusSkipped DeadLetterStatus = "skipped"
)

// DeadLetter is a message the relay could not publish, or one that followed
// an earlier failure of its aggregate into the dead-letter store so as not
// to overtake it.
type DeadLetter struct {
	ID            int64            `json:"id"`
	Message       Message          `json:"message"`
	Error         string           `json:"error"`
	FailureCount  int              `json:"failure_count"`
	FirstFailedAt time.Time        `json:"first_failed_at"`
	LastFailedAt  time.Time        `json:"last_failed_at"`
	Status        DeadLetterStatus `json:"status"`
	// ParkedBehind is the event id of the aggregate's failed message when
	// this one did not fail itself but was parked behind it.
	ParkedBehind string     `json:"parked_behind,omitempty"`
	ReplayCount  int        `json:"replay_count"`
	ResolvedAt   *time.Time `json:"resolved_at,omitempty"`
	Resolution   string     `json:"resolution,omitempty"`
	// PayloadSize is the payload's length in bytes when the payload was
	// left out (DeadLetterFilter.OmitPayload); 0 otherwise.
	PayloadSize int `json:"payload_size,omitempty"`
}

// WithoutPayload is d with its payload left out and PayloadSize set to
// the payload's length.
func (d DeadLetter) WithoutPayload() DeadLetter {
	if d.Message.Payload != nil {
		d.PayloadSize = len(d.Message.Payload)
		d.Message.Payload = nil
	}
	return d
}

// Action is what an operator asked for a parked aggregate.
type Action string

const (
	// ActionReplay republishes every parked message of the aggregate, in order.
	ActionReplay Action = "replay"
	// ActionSkip discards the aggregate's first parked message and
	// republishes the rest, in order.
	ActionSkip Action = "skip"
)

// ParkedAggregate is an aggregate whose messages are held in the
// dead-letter store, and any operator request pending on it.
type ParkedAggregate struct {
	Key      AggregateKey `json:"aggregate"`
	ParkedAt time.Time    `json:"parked_at"`
	Pending  Action       `json:"pending_action,omitempty"`
	// PendingEntry is the dead-letter entry the pending request was
	// decided on (the aggregate's first parked entry at the time).
	PendingEntry int64      `json:"pending_entry,omitempty"`
	Reason       string     `json:"reason,omitempty"`
	RequestedAt  *time.Time `json:"requested_at,omitempty"`
	LastError    string     `json:"last_error,omitempty"`
	ParkedEvents int        `json:"parked_events"`
}

// ActionRequest is an operator's replay or skip of a parked aggregate. It
// names the entry it was decided on, so a request interrupted half-way
// (a crash, a shutdown, a lost lease) and run again acts on that entry
// only: a skip never discards whichever entry happens to be first by then.
type ActionRequest struct {
	Action Action
	Entry  int64
	Reason string
}

// DeadLetterFilter selects dead letters for listing. Zero fields match all.
type DeadLetterFilter struct {
	Aggregate *AggregateKey
	Type      string
	Status    DeadLetterStatus
	Since     time.Time
	Until     time.Time
	AfterID   int64 // keyset pagination: entries with ID > AfterID
	Limit     int   // 0 means 100
	// OmitPayload leaves each entry's payload out (Message.Payload nil)
	// and sets PayloadSize instead: lists without megabytes of poison.
	OmitPayload bool
}
