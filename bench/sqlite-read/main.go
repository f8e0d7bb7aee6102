// Command sqlite-read reads an outbox table the way the SQLite source does
// (every column, in position order, scanned into the same Go types) through
// the driver outbox uses, modernc.org/sqlite (pure Go), and through a cgo
// one, mattn/go-sqlite3, rounds interleaved: what reading the table costs
// whichever driver does it. See README.md ("Benchmarks", SQLite drain).
//
//	cd bench/sqlite-read && go run . [-rows 100000] [-rounds 3]
package main

import (
	"database/sql"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers "sqlite3"
	_ "modernc.org/sqlite"          // registers "sqlite"
)

// schema is migrations/sqlite/outbox/0001_outbox.sql's outbox table.
const schema = `CREATE TABLE outbox (
    position      INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    aggregatetype TEXT    NOT NULL,
    aggregateid   TEXT    NOT NULL,
    type          TEXT    NOT NULL,
    sequence      INTEGER NOT NULL,
    payload       TEXT    NOT NULL,
    headers       TEXT    NOT NULL DEFAULT '{}',
    timestamp     INTEGER NOT NULL
)`

// query is the SQLite source's fetch without its bounds.
const query = `SELECT position, id, aggregatetype, aggregateid, type, sequence, payload, headers, timestamp FROM outbox ORDER BY position`

func main() {
	rows := flag.Int("rows", 100000, "rows in the table")
	rounds := flag.Int("rounds", 3, "rounds, each reading the table once with each driver")
	payload := flag.Int("payload", 256, "payload bytes")
	flag.Parse()
	dir, err := os.MkdirTemp("", "sqlite-read")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "outbox.db")
	if err := fill(path, *rows, *payload); err != nil {
		os.RemoveAll(dir)
		log.Fatal(err)
	}
	fmt.Printf("%d rows of %d-byte payloads, WAL\n", *rows, *payload)
	for round := 1; round <= *rounds; round++ {
		drivers := []string{"sqlite", "sqlite3"}
		if round%2 == 0 {
			slices.Reverse(drivers) // neither always reads a table the other just warmed
		}
		for _, driver := range drivers {
			took, err := read(driver, path, *rows)
			if err != nil {
				os.RemoveAll(dir)
				log.Fatal(err)
			}
			name := map[string]string{"sqlite": "modernc.org/sqlite (pure Go)", "sqlite3": "mattn/go-sqlite3 (cgo)"}[driver]
			fmt.Printf("round %d  %-30s %8.0f rows/s\n", round, name, float64(*rows)/took.Seconds())
		}
	}
}

func fill(path string, n, payloadBytes int) error {
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return err
	}
	defer db.Close()
	for _, stmt := range []string{`PRAGMA journal_mode=WAL`, schema} {
		if _, err := db.Exec(stmt); err != nil {
			return err
		}
	}
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	ins, err := tx.Prepare(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, sequence, payload, headers, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	payload := `{"note":"` + strings.Repeat("x", max(0, payloadBytes-11)) + `"}`
	now := time.Now().UnixMicro()
	for i := range n {
		if _, err := ins.Exec(fmt.Sprintf("0193a0b1-0000-7000-8000-%012d", i), "order", fmt.Sprint("order-", i%5000), "OrderChanged", i/5000+1, payload, "{}", now); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func read(driver, path string, want int) (time.Duration, error) {
	db, err := sql.Open(driver, path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	if err := db.Ping(); err != nil {
		return 0, err
	}
	began := time.Now()
	rows, err := db.Query(query)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	got := 0
	for rows.Next() {
		var pos, seq, ts int64
		var id, aggType, aggID, typ, payload, headers string
		if err := rows.Scan(&pos, &id, &aggType, &aggID, &typ, &seq, &payload, &headers, &ts); err != nil {
			return 0, err
		}
		got++
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if got != want {
		return 0, fmt.Errorf("%s read %d rows, want %d", driver, got, want)
	}
	return time.Since(began), nil
}
