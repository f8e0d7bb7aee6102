package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/internal/testenv"
	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/store/sqlite"
)

// page is a headless Chromium tab on the console, for one test: script
// errors fail the test, and a failed step saves a screenshot and the page.
type page struct {
	t     *testing.T
	ctx   context.Context
	bctx  context.Context
	shots string
	mu    sync.Mutex
	errs  []string
}

func newPage(t *testing.T) *page {
	t.Helper()
	browser := chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	p := &page{t: t, bctx: bctx, shots: artifacts(t)}
	messages := chromedp.Console(bctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if (m.IsException() || m.Type == chromedp.ConsoleError) && !strings.Contains(m.Text, "status of 401") {
				p.mu.Lock()
				p.errs = append(p.errs, m.String())
				p.mu.Unlock()
			}
		}
	}()
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", browser, err)
	}
	ctx, cancel := context.WithTimeout(bctx, 60*time.Second)
	t.Cleanup(cancel)
	p.ctx = ctx
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.errs) > 0 {
			t.Errorf("script errors in the console: %q", p.errs)
		}
	})
	return p
}

func (p *page) shot(name string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		png, err := chromedp.FullScreenshot(100)(ctx, tg)
		if err != nil {
			return chromedp.Void{}, err
		}
		return chromedp.Void{}, os.WriteFile(filepath.Join(p.shots, name), png, 0o644)
	}
}

func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, actions...); err != nil {
		dctx, cancel := context.WithTimeout(p.bctx, 10*time.Second)
		defer cancel()
		chromedp.Do(dctx, p.shot("failed-"+strings.ReplaceAll(what, " ", "-")+".png"))
		html, _ := chromedp.Run(dctx, chromedp.OuterHTML(chromedp.CSS("body")))
		p.t.Fatalf("%s: %v\npage:\n%s", what, err, html)
	}
}

func (p *page) text(sel string) string {
	p.t.Helper()
	s, err := chromedp.Run(p.ctx, chromedp.TextContent(chromedp.CSS(sel)))
	if err != nil {
		p.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func (p *page) eval(expr string) string {
	p.t.Helper()
	s, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		p.t.Fatalf("%s: %v", expr, err)
	}
	return s
}

// until waits for a JavaScript condition to hold.
func until(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(30*time.Second))
}

// The rest of the console in a real browser: the dead-letter list comes
// without payloads and filters by event type; the parked view shows each
// parked aggregate with its waiting events; a payload past the 4,000
// characters shown is cut until "Show all"; a skip shows its dry-run plan,
// changes nothing until confirmed, and then the aggregate is unparked.
func TestConsoleInChromiumFiltersSkipsAndShowsParkedAggregates(t *testing.T) {
	const token = "console-test-token-77b1"
	t.Setenv("OUTBOX_ADMIN_TOKEN", token)
	p := newPage(t)

	// A store with two parked aggregates: order/big (its failed event has
	// a 6,000-character payload; a second event waits behind it) and
	// order/small (one cancellation).
	path := filepath.Join(t.TempDir(), "console.db")
	ctx := t.Context()
	s, err := sqlite.Open(ctx, path, sqlite.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	blob := strings.Repeat("0123456789", 600)
	now := time.Now()
	var bigID int64
	for _, e := range []struct {
		agg, typ string
		seq      int64
		payload  any
	}{{"big", "OrderCreated", 1, map[string]string{"blob": blob}}, {"big", "OrderUpdated", 2, map[string]int{"v": 2}},
		{"small", "OrderCancelled", 1, map[string]int{"v": 1}}} {
		m, _ := outbox.NewMessage("order", e.agg, e.typ, e.seq, e.payload)
		dl := outbox.DeadLetter{Message: m, Error: "MESSAGE_TOO_LARGE", FailureCount: 1, FirstFailedAt: now, LastFailedAt: now}
		if e.seq > 1 { // parked behind the failed one, as the relay parks it
			dl.Error, dl.FailureCount = "", 0
		}
		d, err := s.AddDeadLetter(ctx, dl)
		if err != nil {
			t.Fatal(err)
		}
		if e.seq == 1 && e.agg == "big" {
			bigID = d.ID
		}
	}
	s.Close()

	b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	base, logs := serveSecure(t, "--brokers", b.Addrs()[0], "--store", "sqlite://"+path)
	defer func() {
		if t.Failed() {
			t.Logf("serve's log:\n%s", logs)
		}
	}()
	c := &testenv.APIClient{T: t, Base: base}
	parked := func() int64 {
		_, body := c.Do("GET", "/status", "", nil)
		var st app.StatusDoc
		json.Unmarshal(body, &st)
		return st.Parked
	}
	rows := `document.querySelectorAll("#dlq-rows tr[data-id]").length`

	p.do("open the dead letters and give the token",
		chromedp.Navigate(base+"/ui/#dlq"),
		chromedp.WaitVisible(chromedp.CSS("#token-input")),
		chromedp.SendKeys(chromedp.CSS("#token-input"), token),
		chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)),
		until(rows+` === 3`))
	// The list asked for no payloads.
	if got := p.eval(`performance.getEntriesByType("resource").filter(e => e.name.includes("/dlq?")).map(e => e.name).join(" ")`); !strings.Contains(got, "payload=false") {
		t.Errorf("the console's list fetched %q, want payload=false", got)
	}

	p.do("filter by event type",
		chromedp.SendKeys(chromedp.CSS(`#dlq-filter input[name="type"]`), "OrderCancelled"),
		chromedp.Click(chromedp.CSS(`#dlq-filter button[type="submit"]`)),
		until(rows+` === 1`),
		p.shot("6-filtered.png"))
	if got := p.text("#dlq-rows"); !strings.Contains(got, "order/small") || strings.Contains(got, "order/big") {
		t.Fatalf("filtered on OrderCancelled, the list shows %q", got)
	}
	p.do("clear the filter", chromedp.Click(chromedp.CSS(`#dlq-filter button[type="reset"]`)), until(rows+` === 3`))

	p.do("the parked aggregates",
		chromedp.Navigate(base+"/ui/#parked"),
		until(`document.querySelectorAll("#parked-list .parked-agg").length === 2`),
		p.shot("7-parked.png"))
	if got := p.text("#parked-list"); !strings.Contains(got, "order/big") || !strings.Contains(got, "2 event(s)") ||
		!strings.Contains(got, "waiting behind the failed event") || !strings.Contains(got, "order/small") {
		t.Fatalf("the parked view shows %q", got)
	}

	p.do("open the large dead letter from the parked view",
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`#parked-list a[href="#dlq/%d"]`, bigID))),
		chromedp.WaitVisible(chromedp.CSS("#dl-expand")),
		p.shot("8-payload-cut.png"))
	if shown := p.text("#dl-payload"); len(shown) > 4200 || !strings.Contains(shown, "more characters") || strings.Contains(shown, blob) {
		t.Fatalf("the payload shown before Show all: %d characters, ends %q", len(shown), shown[max(0, len(shown)-80):])
	}
	p.do("show all of the payload",
		chromedp.Click(chromedp.CSS("#dl-expand")),
		until(`document.getElementById("dl-expand").hidden`))
	if shown := p.text("#dl-payload"); !strings.Contains(shown, blob) || strings.Contains(shown, "more characters") {
		t.Fatalf("after Show all the payload is %d characters", len(shown))
	}

	p.do("dry-run a skip",
		chromedp.Click(chromedp.CSS("#dl-skip")),
		chromedp.WaitVisible(chromedp.CSS("#plan")),
		p.shot("9-skip-dry-run.png"))
	if plan := p.text("#plan"); !strings.Contains(plan, "Dry run: skip order/big") || !strings.Contains(plan, "skip 1 event(s) and republish 1") ||
		!strings.Contains(plan, fmt.Sprintf("skip #%d OrderCreated", bigID)) || !strings.Contains(plan, "republish #") {
		t.Fatalf("the skip's plan shows %q", plan)
	}
	if n := parked(); n != 2 {
		t.Fatalf("after the dry run %d aggregates are parked, want 2 (a dry run changes nothing)", n)
	}
	p.do("confirm the skip",
		chromedp.SendKeys(chromedp.CSS("#plan-reason"), "poison"),
		chromedp.Click(chromedp.CSS("#plan-confirm")),
		until(`document.getElementById("dl-result").textContent.startsWith("Done")`))
	if result := p.text("#dl-result"); !strings.Contains(result, "skipped") {
		t.Errorf("after the skip the console says %q", result)
	}
	testenv.Eventually(t, 20*time.Second, "order/big unparked", func() bool { return parked() == 1 })
	p.do("the parked view after the skip",
		chromedp.Navigate(base+"/ui/#parked"),
		until(`document.querySelectorAll("#parked-list .parked-agg").length === 1`))
	if got := p.text("#parked-list"); strings.Contains(got, "order/big") || !strings.Contains(got, "order/small") {
		t.Errorf("after the skip the parked view shows %q", got)
	}
}
