package bench

import (
	"slices"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/internal/app"
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
