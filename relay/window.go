package relay

import "time"

// window holds the records read and not yet settled (acknowledged or
// dead-lettered), in read order, and decides the checkpoint: the last
// record read before the oldest unsettled one.
//
// It holds nothing else. A record that stays unsettled (its aggregate
// failing for minutes) keeps the checkpoint where it is, but not the
// records read after it: those leave as they settle. So the window, like
// the read-ahead it bounds, never holds more than MaxInFlight records,
// and the other aggregates keep flowing past the stuck one.
type window struct {
	head, tail *entry
	len        int
	read       int64    // records read so far
	lastRead   Position // the newest of them
	saved      int64    // records covered by the last checkpoint written
	savedPos   Position
}

type entry struct {
	pos    Position
	before Position // the record read just before this one
	seq    int64    // 1-based read order
	at     time.Time
	prev   *entry
	next   *entry
}

// add records a record just read.
func (w *window) add(pos Position, at time.Time) *entry {
	w.read++
	e := &entry{pos: pos, before: w.lastRead, seq: w.read, at: at, prev: w.tail}
	w.lastRead = pos
	if w.tail != nil {
		w.tail.next = e
	} else {
		w.head = e
	}
	w.tail = e
	w.len++
	return e
}

// settle removes e: it was acknowledged or dead-lettered.
func (w *window) settle(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		w.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		w.tail = e.prev
	}
	e.prev, e.next = nil, nil
	w.len--
}

// checkpointTarget is a position and how many records it covers.
type checkpointTarget struct {
	pos Position
	seq int64
}

// checkpoint returns where the checkpoint may move, and false when it
// may not move from where it is.
func (w *window) checkpoint() (checkpointTarget, bool) {
	c := checkpointTarget{pos: w.lastRead, seq: w.read}
	if w.head != nil {
		c = checkpointTarget{pos: w.head.before, seq: w.head.seq - 1}
	}
	return c, c.pos != "" && c.seq > w.saved
}

// committed records that c was written.
func (w *window) committed(c checkpointTarget) {
	if c.seq > w.saved {
		w.saved, w.savedPos = c.seq, c.pos
	}
}

// behind is how many records were read from the oldest unsettled one on:
// what a crash now would read, and publish, again.
func (w *window) behind() int {
	if w.head == nil {
		return 0
	}
	return int(w.read - w.head.seq + 1)
}

// lag is how far the checkpoint is behind what was read.
func (w *window) lag() Lag {
	l := Lag{Events: int(w.read - w.saved)}
	if w.head != nil {
		l.Age = time.Since(w.head.at)
	}
	return l
}
