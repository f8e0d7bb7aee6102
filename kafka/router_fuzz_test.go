package kafka

import (
	"regexp"
	"testing"

	"github.com/outbox-dev/outbox/outbox"
)

var legalTopicRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// FuzzRouterTopic: the cached route of a message is its route, and a topic
// is legal exactly when Kafka's pattern says so.
func FuzzRouterTopic(f *testing.F) {
	for _, s := range [][2]string{{"order", "OrderCreated"}, {"bad type!", "x"}, {"", ""}, {".", "."}, {"ü", "a"}} {
		f.Add(s[0], s[1])
	}
	r, err := NewRouter("x.{aggregatetype}.{type}")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, aggType, typ string) {
		m := outbox.Message{AggregateType: aggType, Type: typ}
		for range 2 { // uncached, then cached
			got, gotErr := r.Topic(m)
			want, wantErr := r.route(m)
			if got != want || (gotErr == nil) != (wantErr == nil) {
				t.Fatalf("Topic = %q, %v; route = %q, %v", got, gotErr, want, wantErr)
			}
		}
		if legalTopic(aggType) != legalTopicRE.MatchString(aggType) {
			t.Fatalf("legalTopic(%q) = %v, Kafka's pattern says %v", aggType, legalTopic(aggType), !legalTopic(aggType))
		}
	})
}
