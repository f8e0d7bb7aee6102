package app

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A copy of a validated Config given another store opens that store, not
// the original's (bench gives each stage a fresh database this way).
func TestACopiedConfigWithAnotherStoreOpensThatStore(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Store: "sqlite://" + filepath.Join(dir, "first.db")}
	if err := cfg.parse(); err != nil {
		t.Fatal(err)
	}
	other := cfg
	other.Store = "sqlite://" + filepath.Join(dir, "second.db")
	b, err := Open(context.Background(), other, NewLogger(Config{LogLevel: "error", LogFormat: "text"}, io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := os.Stat(filepath.Join(dir, "second.db")); err != nil {
		t.Fatalf("the copy's store was not opened: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "first.db")); err == nil {
		t.Fatal("the copy opened the original's store")
	}
}

// The publisher gets the settings that shape its producer.
func TestThePublisherGetsTheKafkaSettings(t *testing.T) {
	cfg := Config{Store: "sqlite://" + filepath.Join(t.TempDir(), "x.db"), KafkaLinger: 5 * time.Millisecond,
		NoAutoCreate: true, TopicTemplate: "t.{type}"}
	if err := cfg.parse(); err != nil {
		t.Fatal(err)
	}
	got := PublisherConfig(cfg, []string{"k:9092"}, nil)
	if got.Linger != 5*time.Millisecond || !got.DisableAutoTopicCreation || got.TopicTemplate != "t.{type}" || len(got.Brokers) != 1 {
		t.Fatalf("PublisherConfig = %+v", got)
	}
}
