package app

import (
	"strings"

	"github.com/outbox-dev/outbox/store/scylla"
)

// StoreKind is the database a store URL names.
type StoreKind string

const (
	SQLite   StoreKind = "sqlite"
	Postgres StoreKind = "postgres"
	Scylla   StoreKind = "scylla"
)

// StoreURL is a --store value, parsed and checked once.
type StoreURL struct {
	Kind StoreKind
	// Raw is the URL as given; it may hold a password: print String().
	Raw string
	// Path is SQLite's database file.
	Path string
	// Scylla is a scylla:// URL's settings.
	Scylla scylla.URLConfig
}

// String is the URL with its password hidden.
func (u StoreURL) String() string { return RedactURL(u.Raw) }

// ParseStoreURL checks a store URL.
func ParseStoreURL(raw string) (StoreURL, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return StoreURL{}, Usagef("--store %q must be a URL such as sqlite://outbox.db", RedactURL(raw))
	}
	u := StoreURL{Raw: raw}
	switch scheme {
	case "sqlite":
		if rest == "" {
			return StoreURL{}, Usagef("--store %q names no file", raw)
		}
		u.Kind, u.Path = SQLite, rest
	case "postgres", "postgresql":
		u.Kind = Postgres
	case "scylla":
		st, err := scylla.ParseURL(raw)
		if err != nil {
			return StoreURL{}, UsageError{Err: err}
		}
		u.Kind, u.Scylla = Scylla, st
	default:
		return StoreURL{}, Usagef("--store scheme %q is unknown; use sqlite://PATH, postgres://... or scylla://HOST,HOST/KEYSPACE", scheme)
	}
	return u, nil
}
