package postgres

import (
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outbox-dev/outbox/order"
)

func TestUnavailableClassifiesByBehaviour(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"cannot connect now", &pgconn.PgError{Code: "57P03"}, true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"refused", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"serialization failure", &pgconn.PgError{Code: "40001"}, false},
		{"closed connection", fmt.Errorf("create order: %w", pgconn.ErrConnClosed), true},
		{"other", errors.New("boom"), false},
		{"conflict", order.ErrConflict, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := errors.Is(unavailable(tc.err), order.ErrUnavailable); got != tc.want {
				t.Fatalf("unavailable(%v) is ErrUnavailable = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
	if unavailable(nil) != nil {
		t.Fatal("nil must stay nil")
	}
}
