package bench

import (
	"slices"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/internal/app"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The child relay gets bench's --kafka-linger, 0 too: it would otherwise
// take OUTBOX_KAFKA_LINGER from the environment it inherits, and differ
// from what the report's conditions say.
func TestTheChildRelayGetsTheLinger(t *testing.T) {
	for _, linger := range []time.Duration{0, 5 * time.Millisecond} {
		e := &benchEnv{cfg: app.Config{KafkaLinger: linger, PollInterval: time.Second}, source: "poll", brokers: []string{"k:9092"}}
		args := e.childArgs(&stage{cfg: app.Config{Store: "sqlite://x.db"}, topic: "t"})
		i := slices.Index(args, "--kafka-linger")
		if i < 0 || i+1 >= len(args) || args[i+1] != linger.String() {
			t.Fatalf("linger %s: child args %q, want --kafka-linger %s", linger, args, linger)
		}
	}
}

// Raw produce, the baseline of the CPU figures, lingers as the relay does:
// at a fixed rate a lingering relay sends fewer, larger requests, and a
// baseline sending each record at once would make that look like the
// relay's own saving.
func TestRawProduceLingersAsTheRelayDoes(t *testing.T) {
	for _, linger := range []time.Duration{0, 5 * time.Millisecond} {
		e := &benchEnv{cfg: app.Config{KafkaLinger: linger}, brokers: []string{"127.0.0.1:1"}}
		cl, err := e.rawProducer()
		if err != nil {
			t.Fatal(err)
		}
		got := cl.OptValue(kgo.ProducerLinger)
		cl.Close()
		if relays := app.PublisherConfig(e.cfg, e.brokers, nil).Linger; got != relays || got != linger {
			t.Fatalf("--kafka-linger %s: the relay lingers %s, raw produce %v", linger, relays, got)
		}
	}
}
