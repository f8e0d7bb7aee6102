package health_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/health"
)

func TestFailingAndPanickingChecksAreReportedAndResumed(t *testing.T) {
	storeDown := true
	c := health.New(health.Config{Interval: time.Second},
		health.Check{Name: "store", Critical: true, Run: func(context.Context) error {
			if storeDown {
				return errors.New("database is locked")
			}
			return nil
		}},
		health.Check{Name: "flaky", Run: func(context.Context) error { panic("boom") }},
	)
	if c.Ready() {
		t.Fatal("ready before any check ran")
	}
	c.RunOnce(t.Context())
	r := c.Report()
	if c.Ready() || r["store"].OK || r["store"].Error != "database is locked" {
		t.Fatalf("report %+v", r)
	}
	if r["flaky"].OK || r["flaky"].Error == "" {
		t.Fatalf("a panicking check must be reported, not crash the checker: %+v", r["flaky"])
	}
	storeDown = false
	c.RunOnce(t.Context())
	if !c.Ready() {
		t.Fatal("not ready after the critical check recovered (non-critical failures do not count)")
	}
}
