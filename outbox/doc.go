// Package outbox holds the types every other package shares: the outbox
// Message (with Debezium's column names), aggregate keys, dead letters, and
// the classification of errors into transient and permanent.
//
// It does no I/O. What it guarantees is vocabulary: a Message's ID is a
// UUIDv7 (time-ordered, unique per event), and its Sequence is the
// aggregate's version, strictly increasing within one aggregate, which is
// what consumers use to restore order across topics.
package outbox
