package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/outbox-dev/outbox/outbox"
)

func TestNewMessageIsValidAndTimeOrdered(t *testing.T) {
	a, err := outbox.NewMessage("order", "o1", "OrderCreated", 1, map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := outbox.NewMessage("order", "o1", "OrderUpdated", 2, nil)
	if a.ID.Version() != 7 {
		t.Fatalf("event id version %d, want UUIDv7", a.ID.Version())
	}
	if strings.Compare(a.ID.String(), b.ID.String()) >= 0 {
		t.Fatal("UUIDv7 ids must sort in creation order")
	}
	if a.Key() != (outbox.AggregateKey{Type: "order", ID: "o1"}) || a.Key().String() != "order/o1" {
		t.Fatalf("key %v", a.Key())
	}
}

func TestValidateNamesTheField(t *testing.T) {
	good, _ := outbox.NewMessage("order", "o1", "OrderCreated", 1, 1)
	for _, tc := range []struct {
		field string
		edit  func(*outbox.Message)
	}{
		{"aggregatetype", func(m *outbox.Message) { m.AggregateType = "" }},
		{"aggregateid", func(m *outbox.Message) { m.AggregateID = "" }},
		{"type", func(m *outbox.Message) { m.Type = "" }},
		{"sequence", func(m *outbox.Message) { m.Sequence = -1 }},
		{"payload", func(m *outbox.Message) { m.Payload = []byte("{") }},
		{"id", func(m *outbox.Message) { m.ID = [16]byte{} }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			m := good
			tc.edit(&m)
			err := m.Validate()
			if !errors.Is(err, outbox.ErrInvalidMessage) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tc.field)
			}
		})
	}
	if _, err := outbox.NewMessage("order", "o1", "X", 1, func() {}); err == nil {
		t.Fatal("an unencodable payload was accepted")
	}
}

type temporary struct{}

func (temporary) Error() string   { return "temporary" }
func (temporary) Permanent() bool { return false }

func TestClassificationByBehaviour(t *testing.T) {
	perm := outbox.Permanent(errors.New("too large"))
	for _, tc := range []struct {
		name                 string
		err                  error
		permanent, retryable bool
	}{
		{"nil", nil, false, false},
		{"plain", errors.New("connection refused"), false, true},
		{"permanent", perm, true, false},
		{"wrapped permanent", fmt.Errorf("publish: %w", perm), true, false},
		{"joined permanent", errors.Join(errors.New("a"), perm), true, false},
		{"declares not permanent", temporary{}, false, true},
		{"cancelled", context.Canceled, false, false},
		{"deadline", context.DeadlineExceeded, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := outbox.IsPermanent(tc.err); got != tc.permanent {
				t.Errorf("IsPermanent = %v, want %v", got, tc.permanent)
			}
			if got := outbox.IsRetryable(tc.err); got != tc.retryable {
				t.Errorf("IsRetryable = %v, want %v", got, tc.retryable)
			}
		})
	}
	if outbox.Permanent(nil) != nil {
		t.Fatal("Permanent(nil) must stay nil")
	}
	if !errors.Is(perm, perm) || errors.Unwrap(perm) == nil {
		t.Fatal("Permanent must keep the cause")
	}
}

func ExampleNewMessage() {
	m, err := outbox.NewMessage("order", "order-42", "OrderCreated", 1, map[string]any{"total": 1999})
	if err != nil {
		panic(err)
	}
	fmt.Println(m.Key(), m.Type, m.Sequence, string(m.Payload))
	// Output: order/order-42 OrderCreated 1 {"total":1999}
}

func ExampleIsPermanent() {
	err := fmt.Errorf("publish: %w", outbox.Permanent(errors.New("message too large")))
	fmt.Println(outbox.IsPermanent(err), outbox.IsRetryable(err))
	// Output: true false
}
