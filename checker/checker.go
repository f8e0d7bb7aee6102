// Package checker verifies the outbox's promise from what happened, not
// from what the code meant: a history of writes (JSON lines) against the
// records actually found in the topics and the dead-letter store.
//
// Every record is judged by the committed event its id names, never by
// what the relay wrote about it: order, aggregate, sequence, type and
// payload come from the history, and the record must match them.
//
//   - lost:      committed − (published ∪ dead letters the scenario
//     expects), must be 0
//   - phantom:   published but never committed, must be 0
//   - order:     aggregates whose events' first occurrences in a topic are
//     not in increasing committed sequence, must be 0
//   - corrupt:   records whose key, headers or payload differ from the
//     committed event, must be 0
//   - parking:   events published after their aggregate's dead letter,
//     which is still parked (neither replayed nor skipped), must be 0
//   - unexpected dead letters: dead-lettered events the scenario did not
//     expect (a transient failure turned into a dead letter), must be 0
//   - dup:       published records − distinct event ids (allowed; reported
//     with the largest copy count)
package checker

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
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

// Event is one line of history: what was committed, as the store has it.
type Event struct {
	Op        Op     `json:"op"`
	ID        string `json:"id"`
	Aggregate string `json:"aggregate"` // aggregatetype/aggregateid
	Sequence  int64  `json:"sequence"`
	// Key is the aggregate id, the record key the event must carry.
	Key string `json:"key,omitempty"`
	// Type is the event type, carried in the type header.
	Type string `json:"type,omitempty"`
	// Payload is Digest of the committed payload.
	Payload string `json:"payload,omitempty"`
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

// Digest is a stable digest of a JSON payload: the same value with other
// key order or spacing (a JSONB column reorders keys) has the same
// digest. Bytes that are not JSON are digested as they are.
func Digest(payload []byte) string {
	canon := payload
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err == nil && !dec.More() {
		if b, err := json.Marshal(v); err == nil {
			canon = b
		}
	}
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:12])
}

// Observed is one record found in a topic.
type Observed struct {
	Topic     string
	Partition int32
	Offset    int64
	// ID is the event id the record names (its id header): the link to
	// the history, and nothing more is taken on trust.
	ID string
	// What the record says about itself, compared with the committed
	// event when Wire is set: a record read from a broker must carry its
	// event's key, headers and payload.
	Wire      bool
	Key       string
	Aggregate string
	Sequence  int64
	Type      string
	Payload   string // Digest of the value
}

// DeadLetter is an entry found in the dead-letter store.
type DeadLetter struct {
	ID     string // the event id
	Status string // parked, skipped or replayed
}

// Input is everything Verify judges.
type Input struct {
	History     []Event
	Observed    []Observed
	DeadLetters []DeadLetter
	// ExpectDead says whether the scenario expects an event to be
	// dead-lettered (its poison). Nil: none is expected, and any dead
	// letter is a failure.
	ExpectDead func(id string) bool
}

// Report holds the figures. Everything but Dup and MaxCopies must be 0.
type Report struct {
	Committed      int `json:"committed"`
	Published      int `json:"published_records"`
	Distinct       int `json:"published_distinct"`
	DeadLettered   int `json:"dead_lettered"`
	Lost           int `json:"lost"`
	Phantom        int `json:"phantom"`
	Order          int `json:"order"`
	Corrupt        int `json:"corrupt"`
	Parking        int `json:"parking"`
	UnexpectedDead int `json:"unexpected_dead"`
	Dup            int `json:"dup"`
	MaxCopies      int `json:"max_copies"`
	// Examples name a few offenders of each kind, for the failure message.
	Examples []string `json:"examples,omitempty"`
}

// OK reports whether the invariants hold.
func (r Report) OK() bool {
	return r.Lost == 0 && r.Phantom == 0 && r.Order == 0 && r.Corrupt == 0 && r.Parking == 0 && r.UnexpectedDead == 0
}

func (r Report) String() string {
	s := fmt.Sprintf("committed=%d published=%d distinct=%d dead-lettered=%d lost=%d phantom=%d order=%d dup=%d (max copies %d)",
		r.Committed, r.Published, r.Distinct, r.DeadLettered, r.Lost, r.Phantom, r.Order, r.Dup, r.MaxCopies)
	for _, f := range []struct {
		name string
		n    int
	}{{"corrupt", r.Corrupt}, {"parking", r.Parking}, {"unexpected-dead", r.UnexpectedDead}} {
		if f.n != 0 {
			s += fmt.Sprintf(" %s=%d", f.name, f.n)
		}
	}
	if len(r.Examples) > 0 {
		s += "; e.g. " + strings.Join(r.Examples, "; ")
	}
	return s
}

// Check judges observed against history, taking every id in deadLettered
// as an expected dead letter whose status it does not know, so parking is
// not judged (the form small harnesses use; Verify judges it).
func Check(history []Event, observed []Observed, deadLettered []string) Report {
	dead := make([]DeadLetter, len(deadLettered))
	expected := map[string]bool{}
	for i, id := range deadLettered {
		dead[i] = DeadLetter{ID: id}
		expected[id] = true
	}
	return Verify(Input{History: history, Observed: observed, DeadLetters: dead, ExpectDead: func(id string) bool { return expected[id] }})
}

// Verify computes the report.
func Verify(in Input) Report {
	committed := map[string]Event{}
	for _, e := range in.History {
		if e.Op == OpCommit {
			committed[e.ID] = e
		}
	}
	dead := map[string]string{} // id -> status
	for _, d := range in.DeadLetters {
		// An event parked, replayed and parked again has several entries:
		// the latest status is what holds now.
		if _, ok := dead[d.ID]; !ok || d.Status == "parked" {
			dead[d.ID] = d.Status
		}
	}
	copies := map[string]int{}
	for _, o := range in.Observed {
		copies[o.ID]++
	}
	rep := Report{Committed: len(committed), Published: len(in.Observed), Distinct: len(copies), DeadLettered: len(dead)}
	example := func(format string, args ...any) {
		if len(rep.Examples) < 8 {
			rep.Examples = append(rep.Examples, fmt.Sprintf(format, args...))
		}
	}
	expected := func(id string) bool { return in.ExpectDead != nil && in.ExpectDead(id) }
	for _, id := range sortedKeys(dead) {
		if !expected(id) {
			rep.UnexpectedDead++
			example("unexpected dead letter %s (%s)", id, dead[id])
		}
	}
	for _, id := range sortedKeys(committed) {
		_, isDead := dead[id]
		if copies[id] == 0 && !(isDead && expected(id)) {
			rep.Lost++
			example("lost %s", id)
		}
	}
	for _, id := range sortedKeys(copies) {
		n := copies[id]
		if _, ok := committed[id]; !ok {
			rep.Phantom++
			example("phantom %s", id)
		}
		rep.Dup += n - 1
		rep.MaxCopies = max(rep.MaxCopies, n)
	}
	for _, o := range in.Observed {
		if e, ok := committed[o.ID]; ok && o.Wire {
			if why := mismatch(e, o); why != "" {
				rep.Corrupt++
				example("corrupt %s at %s/%d@%d: %s", o.ID, o.Topic, o.Partition, o.Offset, why)
			}
		}
	}
	rep.Order = orderViolations(in.Observed, committed, example)
	rep.Parking = parkingViolations(in.Observed, committed, dead, example)
	return rep
}

// mismatch says how a record differs from its committed event.
func mismatch(e Event, o Observed) string {
	var why []string
	if e.Key != "" && o.Key != e.Key {
		why = append(why, fmt.Sprintf("key %q, committed under %q", o.Key, e.Key))
	}
	if o.Aggregate != e.Aggregate {
		why = append(why, fmt.Sprintf("aggregate %q, committed %q", o.Aggregate, e.Aggregate))
	}
	if o.Sequence != e.Sequence {
		why = append(why, fmt.Sprintf("sequence %d, committed %d", o.Sequence, e.Sequence))
	}
	if e.Type != "" && o.Type != e.Type {
		why = append(why, fmt.Sprintf("type %q, committed %q", o.Type, e.Type))
	}
	if e.Payload != "" && o.Payload != e.Payload {
		why = append(why, "payload differs from the committed one")
	}
	return strings.Join(why, ", ")
}

// orderViolations counts aggregates whose first occurrences, in a topic,
// do not come in increasing committed sequence. Partitions of one topic
// are read in offset order; an aggregate lives in one partition per topic.
func orderViolations(observed []Observed, committed map[string]Event, example func(string, ...any)) int {
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
		e, ok := committed[o.ID]
		if !ok || seen[o.Topic+"\x00"+o.ID] {
			continue // a phantom (counted apart) or a duplicate: only first occurrences count
		}
		seen[o.Topic+"\x00"+o.ID] = true
		s := stream{o.Topic, e.Aggregate}
		if prev, ok := last[s]; ok && e.Sequence <= prev && !bad[e.Aggregate] {
			bad[e.Aggregate] = true
			example("order %s in %s: sequence %d after %d", e.Aggregate, o.Topic, e.Sequence, prev)
		}
		last[s] = max(last[s], e.Sequence)
	}
	return len(bad)
}

// parkingViolations counts published events that come, in their
// aggregate, after an event whose dead letter is still parked: parking
// holds an aggregate's later events back until a replay or skip releases
// them.
func parkingViolations(observed []Observed, committed map[string]Event, dead map[string]string, example func(string, ...any)) int {
	parkedAt := map[string]int64{} // aggregate -> the lowest sequence still parked
	for id, status := range dead {
		e, ok := committed[id]
		if !ok || status != "parked" {
			continue
		}
		if s, ok := parkedAt[e.Aggregate]; !ok || e.Sequence < s {
			parkedAt[e.Aggregate] = e.Sequence
		}
	}
	bad := 0
	seen := map[string]bool{}
	for _, o := range observed {
		e, ok := committed[o.ID]
		if !ok || seen[o.ID] {
			continue
		}
		seen[o.ID] = true
		if s, parked := parkedAt[e.Aggregate]; parked && e.Sequence > s {
			bad++
			example("parking %s: sequence %d published while sequence %d is parked", e.Aggregate, e.Sequence, s)
		}
	}
	return bad
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
