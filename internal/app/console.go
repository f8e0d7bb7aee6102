package app

import (
	"context"
	"time"

	"github.com/outbox-dev/outbox/metrics"
	"github.com/outbox-dev/outbox/relay"
)

// historyInterval is how often the console's charts get a sample;
// historySamples of them cover the last five minutes.
const (
	historyInterval = 2 * time.Second
	historySamples  = 150
)

// historySampler records the relay's figures into the console's history
// every historyInterval.
type historySampler struct {
	h     *metrics.History
	stats func() relay.Stats
}

func (s historySampler) Serve(ctx context.Context) error {
	t := time.NewTicker(historyInterval)
	defer t.Stop()
	s.h.Record(time.Now(), s.stats())
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			s.h.Record(now, s.stats())
		}
	}
}
