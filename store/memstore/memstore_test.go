package memstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/memstore"
	"github.com/outbox-dev/outbox/store/poll"
	"github.com/outbox-dev/outbox/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Features{ConcurrentWriters: true, UniqueEventIDs: true}, func(t *testing.T) storetest.Harness {
		s := memstore.New()
		src, err := poll.NewSource(s, poll.Config{Interval: time.Millisecond, Wake: s.Wake()})
		if err != nil {
			t.Fatal(err)
		}
		return storetest.Harness{
			Store:  s,
			Source: src,
			Append: func(ctx context.Context, msgs []outbox.Message, fail bool) error {
				return s.Transact(ctx, func(tx *memstore.Tx) error {
					if err := tx.Append(msgs...); err != nil {
						return err
					}
					if fail {
						return errors.New("rolled back on purpose")
					}
					return nil
				})
			},
		}
	})
}
