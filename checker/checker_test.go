package checker_test

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/outbox-dev/outbox/checker"
)

func TestCheckFigures(t *testing.T) {
	commit := func(id, agg string, seq int64) checker.Event {
		return checker.Event{Op: checker.OpCommit, ID: id, Aggregate: agg, Sequence: seq}
	}
	obs := func(topic string, off int64, id, agg string, seq int64) checker.Observed {
		return checker.Observed{Topic: topic, Offset: off, ID: id, Aggregate: agg, Sequence: seq}
	}
	history := []checker.Event{
		commit("a1", "a", 1), commit("a2", "a", 2), commit("a3", "a", 3),
		commit("b1", "b", 1), commit("b2", "b", 2),
		{Op: checker.OpFail, ID: "x1", Aggregate: "x", Sequence: 1},
	}
	for _, tc := range []struct {
		name     string
		observed []checker.Observed
		dead     []string
		want     checker.Report
	}{
		{"clean", []checker.Observed{obs("t", 0, "a1", "a", 1), obs("t", 1, "b1", "b", 1), obs("t", 2, "a2", "a", 2), obs("t", 3, "a3", "a", 3), obs("t", 4, "b2", "b", 2)}, nil,
			checker.Report{Committed: 5, Published: 5, Distinct: 5, MaxCopies: 1}},
		{"lost", []checker.Observed{obs("t", 0, "a1", "a", 1), obs("t", 1, "a2", "a", 2), obs("t", 2, "b1", "b", 1)}, nil,
			checker.Report{Committed: 5, Published: 3, Distinct: 3, Lost: 2, MaxCopies: 1}},
		{"dead-lettered is not lost", []checker.Observed{obs("t", 0, "a1", "a", 1), obs("t", 1, "b1", "b", 1), obs("t", 2, "b2", "b", 2)}, []string{"a2", "a3"},
			checker.Report{Committed: 5, Published: 3, Distinct: 3, DeadLettered: 2, MaxCopies: 1}},
		{"phantom from a rolled-back write", []checker.Observed{obs("t", 0, "x1", "x", 1)}, []string{"a1", "a2", "a3", "b1", "b2"},
			checker.Report{Committed: 5, Published: 1, Distinct: 1, DeadLettered: 5, Phantom: 1, MaxCopies: 1}},
		{"order", []checker.Observed{obs("t", 0, "a2", "a", 2), obs("t", 1, "a1", "a", 1), obs("t", 2, "a3", "a", 3), obs("t", 3, "b1", "b", 1), obs("t", 4, "b2", "b", 2)}, nil,
			checker.Report{Committed: 5, Published: 5, Distinct: 5, Order: 1, MaxCopies: 1}},
		{"duplicates after a restart keep order", []checker.Observed{obs("t", 0, "a1", "a", 1), obs("t", 1, "a2", "a", 2), obs("t", 2, "a2", "a", 2), obs("t", 3, "a3", "a", 3), obs("t", 4, "a3", "a", 3), obs("t", 5, "a3", "a", 3), obs("t", 6, "b1", "b", 1), obs("t", 7, "b2", "b", 2)}, nil,
			checker.Report{Committed: 5, Published: 8, Distinct: 5, Dup: 3, MaxCopies: 3}},
		{"topics are separate streams", []checker.Observed{obs("created", 0, "a1", "a", 1), obs("updated", 0, "a2", "a", 2), obs("created", 1, "b1", "b", 1), obs("updated", 1, "a3", "a", 3), obs("updated", 2, "b2", "b", 2)}, nil,
			checker.Report{Committed: 5, Published: 5, Distinct: 5, MaxCopies: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := checker.Check(history, tc.observed, tc.dead)
			got.Examples = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestHistoryRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	rec := checker.NewRecorder(&buf)
	rec.Record(checker.Event{Op: checker.OpCommit, ID: "a1", Aggregate: "a", Sequence: 1})
	rec.Record(checker.Event{Op: checker.OpFail, ID: "a2", Aggregate: "a", Sequence: 2})
	got, err := checker.ReadHistory(&buf)
	if err != nil || len(got) != 2 || got[1].Op != checker.OpFail {
		t.Fatalf("read back %+v %v", got, err)
	}
	if _, err := checker.ReadHistory(strings.NewReader(`{"op":"maybe","id":"x"}`)); err == nil {
		t.Fatal("unknown op accepted")
	}
	if _, err := checker.ReadHistory(strings.NewReader("{not json")); err == nil {
		t.Fatal("bad line accepted")
	}
}

func FuzzReadHistory(f *testing.F) {
	f.Add([]byte(`{"op":"commit","id":"a","aggregate":"x","sequence":1}` + "\n"))
	f.Add([]byte("\n\n{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		events, err := checker.ReadHistory(bytes.NewReader(data))
		if err == nil {
			for _, e := range events {
				if e.Op != checker.OpCommit && e.Op != checker.OpFail {
					t.Fatalf("accepted op %q", e.Op)
				}
			}
		}
	})
}
