package postgres_test

import (
	"slices"
	"testing"

	"github.com/outbox-dev/outbox/outbox"
)

// Polling orders rows by their transaction id as a number. Sorted as the
// text the query selects, "1000000" came before "999999": a fetch that
// spanned a power of ten returned its later transactions first and left
// the cursor on the earlier ones, so the next fetch returned the later
// ones again (published twice, and an aggregate's events out of order);
// a fetch cut short by its limit jumped past the earlier ones for good.
func TestPollingOrdersTransactionIDsAsNumbers(t *testing.T) {
	s, _ := newDB(t)
	ctx := t.Context()
	var msgs []outbox.Message
	for seq := range int64(4) {
		msgs = append(msgs, msg(t, "A", seq+1))
	}
	if err := appendFunc(s)(ctx, msgs, false); err != nil {
		t.Fatal(err)
	}
	// The server's transaction ids passing 9 → 10, as they pass 999999 →
	// 1000000: the four events written by transactions 8, 9, 10 and 11,
	// long finished.
	if _, err := s.Pool().Exec(ctx, `UPDATE outbox SET txid = (7 + sequence)::text::xid8`); err != nil {
		t.Fatal(err)
	}
	for _, max := range []int{1, 2, 3, 4, 100} {
		var got []int64
		var after outbox.Position
		for range 10 {
			recs, err := s.Fetch(ctx, after, max)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				got = append(got, r.Message.Sequence)
			}
			after = recs[len(recs)-1].Position
		}
		if want := []int64{1, 2, 3, 4}; !slices.Equal(got, want) {
			t.Errorf("fetching %d at a time across transaction ids 9 and 10 read sequences %v, want %v", max, got, want)
		}
	}
}
