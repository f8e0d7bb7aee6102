package scyllaemu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The CQL native protocol, versions 3 and 4 (what the scylla gocql fork
// negotiates with Apache Cassandra 5): a 9-byte header, then the body.
// Only what the proxy rewrites is decoded; everything else is copied.

const (
	headerSize   = 9
	maxFrameBody = 256 << 20 // the protocol's own limit

	flagCompression   = 0x01
	flagTracing       = 0x02
	flagCustomPayload = 0x04
	flagWarning       = 0x08

	opError   = 0x00
	opStartup = 0x01
	opOptions = 0x05
	opQuery   = 0x07
	opResult  = 0x08
	opPrepare = 0x09
	opExecute = 0x0A
	opBatch   = 0x0D

	resultVoid         = 0x0001
	resultSchemaChange = 0x0005

	errProtocol = 0x000A
	errInvalid  = 0x2200

	// query parameter flags
	qpValues = 0x01
	qpNames  = 0x40
)

type header struct {
	version byte // 0x80 set on responses
	flags   byte
	stream  int16
	opcode  byte
}

type frame struct {
	header
	body []byte
}

var errFrameTooLarge = errors.New("scyllaemu: frame larger than the protocol allows")

func readFrame(r io.Reader) (frame, error) {
	var h [headerSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return frame{}, err
	}
	n := int32(binary.BigEndian.Uint32(h[5:]))
	if n < 0 || n > maxFrameBody {
		return frame{}, errFrameTooLarge
	}
	f := frame{header: header{version: h[0], flags: h[1], stream: int16(binary.BigEndian.Uint16(h[2:])), opcode: h[4]}, body: make([]byte, n)}
	if _, err := io.ReadFull(r, f.body); err != nil {
		return frame{}, err
	}
	return f, nil
}

func (f frame) bytes() []byte {
	out := make([]byte, headerSize, headerSize+len(f.body))
	out[0], out[1] = f.version, f.flags
	binary.BigEndian.PutUint16(out[2:], uint16(f.stream))
	out[4] = f.opcode
	binary.BigEndian.PutUint32(out[5:], uint32(len(f.body)))
	return append(out, f.body...)
}

// errorFrame is the server's answer to req with a CQL error.
func errorFrame(req header, code int32, msg string) frame {
	var w writer
	w.int(code)
	w.string(msg)
	return frame{header: header{version: req.version | 0x80, stream: req.stream, opcode: opError}, body: w.b}
}

// reader decodes protocol notations; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = fmt.Errorf("scyllaemu: truncated frame body")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if v := r.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) short() int {
	if v := r.take(2); v != nil {
		return int(binary.BigEndian.Uint16(v))
	}
	return 0
}

func (r *reader) int() int32 {
	if v := r.take(4); v != nil {
		return int32(binary.BigEndian.Uint32(v))
	}
	return 0
}

func (r *reader) string() string     { return string(r.take(r.short())) }
func (r *reader) longString() string { return string(r.take(int(r.int()))) }
func (r *reader) shortBytes() []byte { return r.take(r.short()) }

// bytes reads [bytes]; a negative length (null or unset) returns nil and
// the length.
func (r *reader) bytes() ([]byte, int32) {
	n := r.int()
	if n < 0 {
		return nil, n
	}
	return r.take(int(n)), n
}

type writer struct{ b []byte }

func (w *writer) raw(v []byte) { w.b = append(w.b, v...) }
func (w *writer) byte(v byte)  { w.b = append(w.b, v) }
func (w *writer) short(v int)  { w.b = binary.BigEndian.AppendUint16(w.b, uint16(v)) }
func (w *writer) int(v int32)  { w.b = binary.BigEndian.AppendUint32(w.b, uint32(v)) }
func (w *writer) string(s string) {
	w.short(len(s))
	w.b = append(w.b, s...)
}
func (w *writer) longString(s string) {
	w.int(int32(len(s)))
	w.b = append(w.b, s...)
}
func (w *writer) shortBytes(v []byte) {
	w.short(len(v))
	w.b = append(w.b, v...)
}

// value writes [bytes], keeping null (-1) and unset (-2).
func (w *writer) value(v []byte, n int32) {
	if n < 0 {
		w.int(n)
		return
	}
	w.int(int32(len(v)))
	w.b = append(w.b, v...)
}

// copyCustomPayload copies a request's [bytes map] when the frame has one:
// it comes before the body proper.
func copyCustomPayload(f frame, r *reader, w *writer) {
	if f.flags&flagCustomPayload == 0 {
		return
	}
	n := r.short()
	w.short(n)
	for range n {
		w.string(r.string())
		v, l := r.bytes()
		w.value(v, l)
	}
}

// rewriteValues copies query parameters (after the consistency), passing
// each bound value through fn.
func rewriteValues(r *reader, w *writer, fn func([]byte) []byte) {
	w.short(r.short()) // consistency
	flags := r.byte()
	w.byte(flags)
	if flags&qpValues != 0 {
		n := r.short()
		w.short(n)
		for range n {
			if flags&qpNames != 0 {
				w.string(r.string())
			}
			v, l := r.bytes()
			if l >= 0 {
				v = fn(v)
			}
			w.value(v, l)
		}
	}
	w.raw(r.b) // page size, paging state, serial consistency, timestamp
	r.b = nil
}
