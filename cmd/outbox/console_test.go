package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/kafka/kafkatest"
)

// chromium finds Debian's chromium (scripts/test.sh installs it). Without
// it the browser test skips, or fails under OUTBOX_REQUIRE_SERVICES=1.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "chromium is not installed (apt-get install chromium, or run ./scripts/test.sh): the console's browser test needs it"
	if os.Getenv("OUTBOX_REQUIRE_SERVICES") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// artifacts is where the browser test saves its screenshots:
// $OUTBOX_TEST_ARTIFACTS/console, or the test's temporary directory.
func artifacts(t *testing.T) string {
	dir := t.TempDir()
	if d := os.Getenv("OUTBOX_TEST_ARTIFACTS"); d != "" {
		dir = filepath.Join(d, "console")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// The console in a real browser: `outbox serve` with an admin token and a
// broker that refuses one event as too large; the operator opens /ui, gives
// the token, finds the dead letter, opens it, sees the dry-run plan of a
// replay, fixes the broker, confirms, and the event reaches Kafka.
// OUTBOX_UPDATE_DOCS=1 copies the screenshot of the dead letter to
// docs/console.png and of the overview to docs/console-overview.png.
func TestConsoleInChromiumReplaysADeadLetter(t *testing.T) {
	browser := chromium(t)
	shots := artifacts(t)
	const token = "console-test-token-4f2a"
	t.Setenv("OUTBOX_ADMIN_TOKEN", token)

	// The broker refuses every produce as MESSAGE_TOO_LARGE (a permanent
	// error: a dead letter at once) while tooLarge is set.
	b, tooLarge := refusingBroker(t)

	base, logs := serveSecure(t, "--brokers", b.Addrs()[0])
	defer func() {
		if t.Failed() {
			t.Logf("serve's log:\n%s", logs)
		}
	}()
	c := &testenv.APIClient{T: t, Base: base}
	status := func() app.StatusDoc {
		_, body := c.Do("GET", "/status", "", nil)
		var st app.StatusDoc
		json.Unmarshal(body, &st)
		return st
	}
	var ids []string
	for i := range 8 {
		ids = append(ids, c.Create(fmt.Sprintf("c%d", i)))
	}
	testenv.Eventually(t, 20*time.Second, "8 orders published", func() bool { return status().Published >= 8 })
	tooLarge.Store(true)
	if resp, body := c.Do("POST", "/orders/"+ids[3]+"/cancel", "", nil); resp.StatusCode != 200 {
		t.Fatalf("cancel: %d %s", resp.StatusCode, body)
	}
	testenv.Eventually(t, 20*time.Second, "the cancellation dead-lettered", func() bool { return status().DeadLettered == 1 })

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	// Script errors and console.error fail the test (the browser's own
	// line for the 401 that makes the console ask for the token aside).
	var jsMu sync.Mutex
	var jsErrors []string
	messages := chromedp.Console(bctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if (m.IsException() || m.Type == chromedp.ConsoleError) && !strings.Contains(m.Text, "status of 401") {
				jsMu.Lock()
				jsErrors = append(jsErrors, m.String())
				jsMu.Unlock()
			}
		}
	}()
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", browser, err)
	}
	ctx, cancelTimeout := context.WithTimeout(bctx, 60*time.Second)
	defer cancelTimeout()

	shot := func(name string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return chromedp.Void{}, err
			}
			path := filepath.Join(shots, name)
			t.Logf("screenshot %s", path)
			return chromedp.Void{}, os.WriteFile(path, png, 0o644)
		}
	}
	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			// What the page showed, for the failure's artefacts.
			dctx, cancel := context.WithTimeout(bctx, 10*time.Second)
			defer cancel()
			chromedp.Do(dctx, shot("failed.png"))
			html, _ := chromedp.Run(dctx, chromedp.OuterHTML(chromedp.CSS("body")))
			t.Fatalf("%s: %v\npage:\n%s", what, err, html)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	wait := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(30*time.Second))
	}

	// The dead letters need the token: the console asks for it once.
	do("open the dead letters and give the token",
		chromedp.Navigate(base+"/ui/#dlq"),
		chromedp.WaitVisible(chromedp.CSS("#token-input")),
		chromedp.SendKeys(chromedp.CSS("#token-input"), token),
		chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#dlq-rows tr[data-id]")),
		shot("1-dead-letters.png"))
	rows := text("#dlq-rows")
	if !strings.Contains(rows, "parked") || !strings.Contains(rows, "order/"+ids[3]) || !strings.Contains(rows, "OrderCancelled") {
		t.Fatalf("the list shows %q", rows)
	}
	html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatal(err)
	}
	kept, err := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem("outbox-admin-token")`))
	if err != nil || strings.Contains(html, token) || kept != token {
		t.Fatalf("the token is rendered in the page (%v) or not kept for the tab (%q, %v)", strings.Contains(html, token), kept, err)
	}

	do("open the dead letter",
		chromedp.Click(chromedp.CSS("#dlq-rows tr[data-id]")),
		chromedp.WaitVisible(chromedp.CSS("#dl-detail")),
		wait(`document.getElementById("dl-aggregate").textContent !== ""`),
		shot("2-dead-letter.png"))
	if e, d := text("#dl-error"), text("#dl-detail"); !strings.Contains(e, "MESSAGE_TOO_LARGE") || !strings.Contains(d, "OrderCancelled") {
		t.Fatalf("the detail shows error %q in %q", e, d)
	}

	do("dry-run a replay",
		chromedp.Click(chromedp.CSS("#dl-replay")),
		chromedp.WaitVisible(chromedp.CSS("#plan")),
		shot("3-replay-dry-run.png"))
	if plan := text("#plan"); !strings.Contains(plan, "Dry run") || !strings.Contains(plan, "republish 1") || !strings.Contains(plan, "republish #") {
		t.Fatalf("the plan shows %q", plan)
	}
	if st := status(); st.Parked != 1 {
		t.Fatalf("after the dry run %d aggregates are parked, want 1 (a dry run changes nothing)", st.Parked)
	}

	// Fix the cause (the broker takes the event now), then confirm.
	tooLarge.Store(false)
	do("confirm the replay",
		chromedp.SendKeys(chromedp.CSS("#plan-reason"), "broker limit raised"),
		chromedp.Click(chromedp.CSS("#plan-confirm")),
		wait(`document.getElementById("dl-result").textContent.startsWith("Done")`),
		shot("4-replayed.png"))
	if result := text("#dl-result"); !strings.Contains(result, "replay") {
		t.Errorf("after the replay the console says %q", result)
	}

	// The event is on the topic.
	dlEventID := text("#dl-event-id")
	testenv.Eventually(t, 20*time.Second, "the replayed event on Kafka", func() bool {
		recs, err := kafkatest.ReadAll(t.Context(), b.Addrs(), []string{"outbox.event.order"})
		if err != nil {
			return false
		}
		for _, r := range recs {
			if id, err := r.EventID(); err == nil && id.String() == dlEventID && r.Key == ids[3] {
				return true
			}
		}
		return false
	})

	// Some traffic for the charts, then the overview.
	for i := range 20 {
		c.Create(fmt.Sprintf("d%d", i))
	}
	do("the overview",
		chromedp.Navigate(base+"/ui/#overview"),
		wait(`document.querySelectorAll("#chart-rate polyline").length > 0 && document.querySelectorAll("#ov-health tr").length > 0`),
		wait(`Number(document.getElementById("ov-published").textContent.replace(/\D/g, "")) >= 29`),
		shot("5-overview.png"))
	if breaker, health := text("#ov-breaker"), text("#ov-health"); breaker != "closed" || !strings.Contains(health, "store") || strings.Contains(health, "replication-slot") {
		t.Errorf("overview: breaker %q, health %q", breaker, health)
	}

	jsMu.Lock()
	defer jsMu.Unlock()
	if len(jsErrors) > 0 {
		t.Errorf("script errors in the console: %q", jsErrors)
	}
	if os.Getenv("OUTBOX_UPDATE_DOCS") == "1" {
		for from, to := range map[string]string{"3-replay-dry-run.png": "console.png", "5-overview.png": "console-overview.png"} {
			png, err := os.ReadFile(filepath.Join(shots, from))
			if err == nil {
				err = os.WriteFile(filepath.Join("..", "..", "docs", to), png, 0o644)
			}
			if err != nil {
				t.Error(err)
			}
		}
	}
}

// refusingBroker is an embedded broker that refuses every produce as
// MESSAGE_TOO_LARGE while the returned switch is set, until the test ends.
func refusingBroker(t *testing.T) (*kafka.Embedded, *atomic.Bool) {
	t.Helper()
	tooLarge := &atomic.Bool{}
	b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	cl := b.Cluster()
	cl.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cl.KeepControl()
		if !tooLarge.Load() {
			return nil, nil, false
		}
		return kafkatest.FailProduce(req, kerr.MessageTooLarge.Code), nil, true
	})
	return b, tooLarge
}
