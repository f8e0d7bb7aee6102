package order

import (
	"errors"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"
)

// Status of an order.
type Status string

const (
	StatusPending   Status = "pending"
	StatusCancelled Status = "cancelled"
)

// Event types, also the design's topic names.
const (
	EventCreated   = "OrderCreated"
	EventUpdated   = "OrderUpdated"
	EventCancelled = "OrderCancelled"
	// AggregateType names orders in the outbox.
	AggregateType = "order"
)

// Limits bound every input, so a request cannot make the service do
// unbounded work or store unbounded rows.
const (
	MaxItems         = 100
	MaxQuantity      = 10_000
	MaxUnitPrice     = 1_000_000_000_000 // minor units
	MaxIDLength      = 128
	MaxSKULength     = 64
	MaxAddressLength = 512
)

// Item is one order line. UnitPrice is in minor units (cents).
type Item struct {
	SKU       string `json:"sku"`
	Quantity  int64  `json:"quantity"`
	UnitPrice int64  `json:"unit_price"`
}

// Order is the aggregate.
type Order struct {
	ID         string    `json:"id"`
	CustomerID string    `json:"customer_id"`
	Items      []Item    `json:"items"`
	Currency   string    `json:"currency"`
	Address    string    `json:"address,omitempty"`
	Status     Status    `json:"status"`
	Total      int64     `json:"total"`
	Version    int64     `json:"version"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Event is the payload of every order event.
type Event struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Items      []Item `json:"items"`
	Currency   string `json:"currency"`
	Address    string `json:"address,omitempty"`
	Status     Status `json:"status"`
	Total      int64  `json:"total"`
	Version    int64  `json:"version"`
}

func (o Order) event() Event {
	return Event{OrderID: o.ID, CustomerID: o.CustomerID, Items: o.Items, Currency: o.Currency,
		Address: o.Address, Status: o.Status, Total: o.Total, Version: o.Version}
}

// CreateInput is a new order.
type CreateInput struct {
	CustomerID string `json:"customer_id"`
	Items      []Item `json:"items"`
	Currency   string `json:"currency"`
	Address    string `json:"address,omitempty"`
}

// UpdateInput changes the items, the address, or both. Nil means unchanged.
type UpdateInput struct {
	Items   *[]Item `json:"items,omitempty"`
	Address *string `json:"address,omitempty"`
}

// Errors callers branch on.
var (
	ErrNotFound       = errors.New("order not found")
	ErrConflict       = errors.New("version conflict")
	ErrCancelled      = errors.New("order is cancelled")
	ErrIdempotencyKey = errors.New("idempotency key reused with a different request")
	// ErrUnavailable: the store could not be reached or did not answer in
	// time, or the command got no turn to run. A retry with If-Match or
	// an Idempotency-Key is safe.
	ErrUnavailable = errors.New("order service unavailable")
)

// ValidationError names the field that is wrong.
type ValidationError struct {
	Field  string
	Reason string
}

// Error reads as a sentence: the field, then its reason ("items[0].sku is
// required").
func (e *ValidationError) Error() string { return e.Field + " " + e.Reason }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

var currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)

func validText(field, s string, maxLen int, required bool) error {
	switch {
	case required && s == "":
		return invalid(field, "is required")
	case !utf8.ValidString(s):
		return invalid(field, "is not valid UTF-8")
	case utf8.RuneCountInString(s) > maxLen:
		return invalid(field, "is longer than %d characters", maxLen)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return invalid(field, "contains control characters")
		}
	}
	return nil
}

func validItems(items []Item) error {
	if len(items) == 0 {
		return invalid("items", "must hold at least one item")
	}
	if len(items) > MaxItems {
		return invalid("items", "must hold at most %d items", MaxItems)
	}
	for i, it := range items {
		field := fmt.Sprintf("items[%d]", i)
		if err := validText(field+".sku", it.SKU, MaxSKULength, true); err != nil {
			return err
		}
		if it.Quantity < 1 || it.Quantity > MaxQuantity {
			return invalid(field+".quantity", "must be between 1 and %d", MaxQuantity)
		}
		if it.UnitPrice < 0 || it.UnitPrice > MaxUnitPrice {
			return invalid(field+".unit_price", "must be between 0 and %d", MaxUnitPrice)
		}
	}
	return nil
}

// Validate checks a create request.
func (in CreateInput) Validate() error {
	if err := validText("customer_id", in.CustomerID, MaxIDLength, true); err != nil {
		return err
	}
	if err := validItems(in.Items); err != nil {
		return err
	}
	if !currencyCode.MatchString(in.Currency) {
		return invalid("currency", "must be an ISO 4217 code such as EUR")
	}
	return validText("address", in.Address, MaxAddressLength, false)
}

// Validate checks an update request.
func (in UpdateInput) Validate() error {
	if in.Items == nil && in.Address == nil {
		return invalid("items", "must be given when address is not (an update changes at least one)")
	}
	if in.Items != nil {
		if err := validItems(*in.Items); err != nil {
			return err
		}
	}
	if in.Address != nil {
		return validText("address", *in.Address, MaxAddressLength, false)
	}
	return nil
}

func total(items []Item) int64 {
	var t int64
	for _, it := range items {
		t += it.Quantity * it.UnitPrice // bounded by the limits: no overflow
	}
	return t
}
