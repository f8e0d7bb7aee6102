// Package checker verifies the outbox's promise from what happened, not
// from what the code meant: a history of writes (JSON lines) against the
// records actually found in the topics and the dead-letter store.
//
//   - lost:    committed − (published ∪ dead-lettered), must be 0
//   - phantom: published but never committed, must be 0
//   - order:   aggregates whose first occurrences in a topic are not in
//     increasing sequence, must be 0
//   - dup:     published records − distinct event ids (allowed; reported
//     with the largest copy count)
package checker

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Op is what a history line records.
type Op string

const (
	// OpCommit: the write that carried the event was acknowledged.
	OpCommit Op = "commit"
	// OpFail: the write failed or was rolled back; the event must not appear.
	OpFail Op = "fail"
)

// Event is one line of history.
type Event struct {
	Op        Op     `json:"op"`
	ID        string `json:"id"`
	Aggregate string `json:"aggregate"`
	Sequence  int64  `json:"sequence"`
}

// Recorder appends history lines; safe for concurrent use.
type Recorder struct {
	mu  sync.Mutex
	enc *json.Encoder
	mem []Event
}

// NewRecorder writes to w (nil keeps the history in memory only).
func NewRecorder(w io.Writer) *Recorder {
	r := &Recorder{}
	if w != nil {
		r.enc = json.NewEncoder(w)
	}
	return r
}

// Record appends e.
func (r *Recorder) Record(e Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mem = append(r.mem, e)
	if r.enc != nil {
		return r.enc.Encode(e)
	}
	return nil
}

// History returns what was recorded so far.
func (r *Recorder) History() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.mem)
}

// ReadHistory parses JSON lines.
func ReadHistory(rd io.Reader) ([]Event, error) {
	var out []Event
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return out, fmt.Errorf("checker: history line %d: %w", line, err)
		}
		if e.Op != OpCommit && e.Op != OpFail {
			return out, fmt.Errorf("checker: history line %d: unknown op %q", line, e.Op)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// Observed is one record found in a topic.
type Observed struct {
	Topic     string
	Partition int32
	Offset    int64
	ID        string
	Aggregate string
	Sequence  int64
}

// Report holds the figures. Lost, Phantom and Order must be 0.
type Report struct {
	Committed    int `json:"committed"`
	Published    int `json:"published_records"`
	Distinct     int `json:"published_distinct"`
	DeadLettered int `json:"dead_lettered"`
	Lost         int `json:"lost"`
	Phantom      int `json:"phantom"`
	Order        int `json:"order"`
	Dup          int `json:"dup"`
	MaxCopies    int `json:"max_copies"`
	// Examples name a few offenders of each kind, for the failure message.
	Examples []string `json:"examples,omitempty"`
}

// OK reports whether the invariants hold.
func (r Report) OK() bool { return r.Lost == 0 && r.Phantom == 0 && r.Order == 0 }

func (r Report) String() string {
	s := fmt.Sprintf("committed=%d published=%d distinct=%d dead-lettered=%d lost=%d phantom=%d order=%d dup=%d (max copies %d)",
		r.Committed, r.Published, r.Distinct, r.DeadLettered, r.Lost, r.Phantom, r.Order, r.Dup, r.MaxCopies)
	if len(r.Examples) > 0 {
		s += "; e.g. " + strings.Join(r.Examples, "; ")
	}
	return s
}

// Check computes the report. deadLettered holds the event ids found in the
// dead-letter store (still parked or skipped: not expected in the topics).
func Check(history []Event, observed []Observed, deadLettered []string) Report {
	committed := map[string]bool{}
	for _, e := range history {
		if e.Op == OpCommit {
			committed[e.ID] = true
		}
	}
	dead := map[string]bool{}
	for _, id := range deadLettered {
		dead[id] = true
	}
	copies := map[string]int{}
	for _, o := range observed {
		copies[o.ID]++
	}
	rep := Report{Committed: len(committed), Published: len(observed), Distinct: len(copies), DeadLettered: len(dead)}
	example := func(format string, args ...any) {
		if len(rep.Examples) < 6 {
			rep.Examples = append(rep.Examples, fmt.Sprintf(format, args...))
		}
	}
	for _, id := range sortedKeys(committed) {
		if copies[id] == 0 && !dead[id] {
			rep.Lost++
			example("lost %s", id)
		}
	}
	for _, id := range sortedKeys(copies) {
		n := copies[id]
		if !committed[id] {
			rep.Phantom++
			example("phantom %s", id)
		}
		rep.Dup += n - 1
		rep.MaxCopies = max(rep.MaxCopies, n)
	}
	rep.Order = orderViolations(observed, example)
	return rep
}

// orderViolations counts aggregates whose first occurrences, in a topic,
// do not have increasing sequence numbers. Partitions of one topic are
// read in offset order; an aggregate lives in one partition per topic.
func orderViolations(observed []Observed, example func(string, ...any)) int {
	obs := slices.Clone(observed)
	sort.SliceStable(obs, func(i, j int) bool {
		a, b := obs[i], obs[j]
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Offset < b.Offset
	})
	type stream struct{ topic, aggregate string }
	last := map[stream]int64{}
	seen := map[string]bool{}
	bad := map[string]bool{}
	for _, o := range obs {
		if seen[o.Topic+"\x00"+o.ID] {
			continue // a duplicate: only first occurrences count
		}
		seen[o.Topic+"\x00"+o.ID] = true
		s := stream{o.Topic, o.Aggregate}
		if prev, ok := last[s]; ok && o.Sequence <= prev && !bad[o.Aggregate] {
			bad[o.Aggregate] = true
			example("order %s in %s: sequence %d after %d", o.Aggregate, o.Topic, o.Sequence, prev)
		}
		last[s] = o.Sequence
	}
	return len(bad)
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
