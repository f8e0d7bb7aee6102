package checker_test

import (
	"bytes"
	"reflect"
	"slices"
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

// The broken outputs the audit found the old checker calling OK, each
// judged from the committed history rather than from what the record
// says about itself.
func TestVerifyCatchesWhatHeadersHide(t *testing.T) {
	ev := func(id, agg string, seq int64) checker.Event {
		return checker.Event{Op: checker.OpCommit, ID: id, Aggregate: "order/" + agg, Key: agg, Sequence: seq, Type: "Changed",
			Payload: checker.Digest([]byte(`{"id":"` + id + `"}`))}
	}
	wire := func(off int64, e checker.Event) checker.Observed {
		return checker.Observed{Topic: "t", Offset: off, ID: e.ID, Wire: true, Key: e.Key, Aggregate: e.Aggregate,
			Sequence: e.Sequence, Type: e.Type, Payload: e.Payload}
	}
	a1, a2, a3, b1 := ev("a1", "a", 1), ev("a2", "a", 2), ev("a3", "a", 3), ev("b1", "b", 1)
	history := []checker.Event{a1, a2, a3, b1}
	clean := []checker.Observed{wire(0, a1), wire(1, b1), wire(2, a2), wire(3, a3)}
	for _, tc := range []struct {
		name     string
		observed func() []checker.Observed
		dead     []checker.DeadLetter
		expect   func(string) bool
		want     string // the figure that must be non-zero
	}{
		{"clean", func() []checker.Observed { return clean }, nil, nil, ""},
		{"events of one aggregate swapped, each carrying the other's sequence header", func() []checker.Observed {
			o := slices.Clone(clean)
			o[2], o[3] = wire(2, a3), wire(3, a2)
			o[2].Sequence, o[3].Sequence = 2, 3 // the headers lie
			return o
		}, nil, nil, "order"},
		{"an event published under another aggregate's key", func() []checker.Observed {
			o := slices.Clone(clean)
			o[1].Key = "a"
			return o
		}, nil, nil, "corrupt"},
		{"the type header dropped", func() []checker.Observed {
			o := slices.Clone(clean)
			o[0].Type = ""
			return o
		}, nil, nil, "corrupt"},
		{"a payload that is not the committed one", func() []checker.Observed {
			o := slices.Clone(clean)
			o[3].Payload = checker.Digest([]byte(`{"id":"forged"}`))
			return o
		}, nil, nil, "corrupt"},
		{"a later event published while its aggregate's dead letter is parked", func() []checker.Observed {
			return []checker.Observed{wire(0, a1), wire(1, b1), wire(2, a3)}
		}, []checker.DeadLetter{{ID: "a2", Status: "parked"}}, func(id string) bool { return id == "a2" }, "parking"},
		{"a dead letter the scenario did not expect", func() []checker.Observed {
			return []checker.Observed{wire(0, a1), wire(1, b1)}
		}, []checker.DeadLetter{{ID: "a2", Status: "parked"}, {ID: "a3", Status: "parked"}}, nil, "unexpected"},
		{"an unexpected dead letter is not delivered", func() []checker.Observed {
			return []checker.Observed{wire(0, a1), wire(1, b1)}
		}, []checker.DeadLetter{{ID: "a2", Status: "parked"}, {ID: "a3", Status: "parked"}}, nil, "lost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := checker.Verify(checker.Input{History: history, Observed: tc.observed(), DeadLetters: tc.dead, ExpectDead: tc.expect})
			figure := map[string]int{"order": rep.Order, "corrupt": rep.Corrupt, "parking": rep.Parking, "unexpected": rep.UnexpectedDead, "lost": rep.Lost}
			if tc.want == "" {
				if !rep.OK() {
					t.Fatalf("clean output judged broken: %s", rep)
				}
				return
			}
			if rep.OK() || figure[tc.want] == 0 {
				t.Fatalf("%s: %s; want %s > 0 and not OK", tc.name, rep, tc.want)
			}
			t.Logf("verdict: %s", rep)
		})
	}
	// A skip or a replay releases the aggregate: its later events may go.
	rep := checker.Verify(checker.Input{History: history, Observed: []checker.Observed{wire(0, a1), wire(1, b1), wire(2, a3)},
		DeadLetters: []checker.DeadLetter{{ID: "a2", Status: "skipped"}}, ExpectDead: func(id string) bool { return id == "a2" }})
	if !rep.OK() {
		t.Fatalf("after a skip: %s", rep)
	}
}

func TestDigestIgnoresKeyOrderAndSpacing(t *testing.T) {
	if checker.Digest([]byte(`{"b": 1, "a": [1, 2]}`)) != checker.Digest([]byte(`{"a":[1,2],"b":1}`)) {
		t.Fatal("the same JSON value with other key order has another digest")
	}
	if checker.Digest([]byte(`{"a":1}`)) == checker.Digest([]byte(`{"a":2}`)) {
		t.Fatal("different values share a digest")
	}
	if checker.Digest([]byte("not json")) == checker.Digest([]byte("not json!")) {
		t.Fatal("different non-JSON bytes share a digest")
	}
}
