package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// result is one (system, round, scenario).
type result struct {
	System   string `json:"system"`
	Round    int    `json:"round"`
	Scenario string `json:"scenario"`
	Kind     string `json:"kind"`
	Error    string `json:"error,omitempty"`
	// Disrupted: something outside the comparison broke the run
	// (PostgreSQL restarted by other work on the shared machine, or the
	// writers' connections failed); the run is retried and this one is
	// kept only as a record, outside the summary.
	Disrupted bool `json:"disrupted,omitempty"`
	Attempt   int  `json:"attempt"`

	Committed   int  `json:"committed"`
	Delivered   int  `json:"delivered"`  // distinct events consumed
	Lost        int  `json:"lost"`       // committed, never consumed by the end of the run's wait
	Duplicates  int  `json:"duplicates"` // extra copies consumed
	OutOfOrder  int  `json:"out_of_order"`
	Phantoms    int  `json:"phantoms,omitempty"`
	Undecodable int  `json:"undecodable,omitempty"`
	Complete    bool `json:"complete"` // every committed event consumed before the deadline

	// drain
	LoadSeconds    float64 `json:"load_seconds,omitempty"`    // writing the backlog, relay stopped
	DrainSeconds   float64 `json:"drain_seconds,omitempty"`   // relay start → last event consumed
	DrainEvPS      float64 `json:"drain_evps,omitempty"`      // events / DrainSeconds
	StartupSeconds float64 `json:"startup_seconds,omitempty"` // relay start → first event consumed
	SteadyEvPS     float64 `json:"steady_evps,omitempty"`     // first → last event consumed

	// fixed rate
	OfferedRate    int     `json:"offered_rate,omitempty"`
	AchievedRate   float64 `json:"achieved_rate,omitempty"` // commits/s the writers reached
	WriteErrors    int     `json:"write_errors,omitempty"`
	P50ms          float64 `json:"p50_ms,omitempty"`
	P95ms          float64 `json:"p95_ms,omitempty"`
	P99ms          float64 `json:"p99_ms,omitempty"`
	MaxMS          float64 `json:"max_ms,omitempty"`
	KeptUp         bool    `json:"kept_up"`
	EndLag         int     `json:"end_lag_events,omitempty"` // committed − consumed when the writers stopped (warm-up events included)
	MaxLag         int     `json:"max_lag_events,omitempty"` // largest committed − consumed, sampled every 100 ms (warm-up events included)
	CatchUpSeconds float64 `json:"catch_up_seconds,omitempty"`

	// relay process
	CPUSeconds  float64 `json:"cpu_seconds"`
	CPUmsPer1k  float64 `json:"cpu_ms_per_1k"` // relay CPU ms per 1,000 events delivered in the window
	PeakRSSMB   float64 `json:"peak_rss_mb"`
	RelayLogDir string  `json:"relay_log_dir"`
}

func (r *result) line() string {
	if r.Error != "" {
		return fmt.Sprintf("%-11s round %d %-8s ERROR %s", r.System, r.Round, r.Scenario, r.Error)
	}
	if r.Kind == "drain" {
		return fmt.Sprintf("%-11s round %d %-8s %6.0f ev/s (steady %6.0f, startup %.1fs) cpu %.1f ms/1k lost %d dup %d ooo %d",
			r.System, r.Round, r.Scenario, r.DrainEvPS, r.SteadyEvPS, r.StartupSeconds, r.CPUmsPer1k, r.Lost, r.Duplicates, r.OutOfOrder)
	}
	return fmt.Sprintf("%-11s round %d %-8s p50 %.1f p95 %.1f p99 %.1f ms, wrote %.0f/s, kept up %v (end lag %d, max lag %d), cpu %.1f ms/1k, lost %d dup %d ooo %d",
		r.System, r.Round, r.Scenario, r.P50ms, r.P95ms, r.P99ms, r.AchievedRate, r.KeptUp, r.EndLag, r.MaxLag, r.CPUmsPer1k, r.Lost, r.Duplicates, r.OutOfOrder)
}

const (
	sentinelTimeout = 180 * time.Second
	keptUpGrace     = 5 * time.Second  // after the writers stop, everything must arrive within this
	catchUpMax      = 4 * time.Minute  // the longest wait after the writers stop
	stallTimeout    = 30 * time.Second // a wait ends when nothing new arrived for this long
)

// runOne runs a scenario, and up to twice more when something outside the
// comparison disrupted it; every attempt is returned.
func runOne(ctx context.Context, e *env, sys system, round int, sc scenario) []*result {
	var out []*result
	for attempt := 1; attempt <= 3; attempt++ {
		before := e.postmasterStart(ctx)
		res := runAttempt(ctx, e, sys, round, sc, attempt)
		res.Attempt = attempt
		after := e.postmasterStart(ctx)
		if before != after || res.WriteErrors > 0 {
			res.Disrupted = true
			why := fmt.Sprintf("%d write error(s)", res.WriteErrors)
			if before != after {
				why = fmt.Sprintf("PostgreSQL restarted during the run (started %s, then %s) by other work on the machine", before, after)
			}
			res.Error = strings.TrimSpace("disrupted: " + why + "; " + res.Error)
		}
		out = append(out, res)
		if !res.Disrupted || ctx.Err() != nil {
			break
		}
		logf("%s", res.line())
		logf("retrying %s round %d %s", sys.Name(), round, sc.Name)
	}
	return out
}

func runAttempt(ctx context.Context, e *env, sys system, round int, sc scenario, attempt int) *result {
	res := &result{System: sys.Name(), Round: round, Scenario: sc.Name, Kind: sc.Kind}
	short := strings.ReplaceAll(sys.Name(), "-", "_")
	r := &run{env: e, sys: sys, round: round, sc: sc,
		db:     fmt.Sprintf("peers_%s_%s_r%d_%s", e.runID, short, round, sc.Name),
		prefix: fmt.Sprintf("peers.%s.%s.r%d.%s", e.runID, sys.Name(), round, sc.Name),
		// A directory per attempt: a retry must not find the disrupted
		// attempt's files (Debezium's offsets name the old slot's LSN).
		dir: filepath.Join(e.o.workDir, fmt.Sprintf("r%d-%s-%s-a%d", round, sc.Name, sys.Name(), attempt))}
	r.slot = r.db
	r.topic = r.prefix + "." + aggregateType
	r.dsn = e.dsn(r.db)
	res.RelayLogDir = r.dir
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		res.Error = err.Error()
		return res
	}
	err := runScenario(ctx, r, res)
	if err != nil {
		res.Error = err.Error()
	}
	return res
}

func runScenario(ctx context.Context, r *run, res *result) (err error) {
	e, sys, sc := r.env, r.sys, r.sc
	// Fresh state: a database, slot, publication and topic of this run only.
	if err := e.dropDB(ctx, r.db); err != nil {
		return fmt.Errorf("drop old database: %w", err)
	}
	if err := e.createDB(ctx, r.db); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if derr := e.dropDB(cctx, r.db); derr != nil {
			logf("drop database %s: %v", r.db, derr)
		}
	}()
	if err := sys.Setup(ctx, r); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	if err := e.createTopic(ctx, r.topic); err != nil {
		return fmt.Errorf("create topic: %w", err)
	}
	defer e.deleteTopic(context.Background(), r.topic)

	n := sc.Events
	if sc.Kind == "rate" {
		n = sc.Rate * sc.Seconds
	}
	col, err := newCollector(strings.Split(e.o.brokers, ","), r.topic, n)
	if err != nil {
		return err
	}
	defer col.close()

	conn, err := pgx.Connect(ctx, r.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	p, err := sys.Start(ctx, r)
	if err != nil {
		return fmt.Errorf("start relay: %w", err)
	}
	defer func() { p.stop() }()
	if err := warmUp(ctx, r, conn, p, col); err != nil {
		return err
	}

	if sc.Kind == "drain" {
		return drain(ctx, r, res, conn, &p, col, n)
	}
	return fixedRate(ctx, r, res, p, col, n)
}

// warmUp writes a sentinel event every second until one arrives: the relay
// is then running and capturing (for Debezium: its slot exists and its
// snapshot is done).
func warmUp(ctx context.Context, r *run, conn *pgx.Conn, p *proc, col *collector) error {
	deadline := time.Now().Add(sentinelTimeout)
	for time.Now().Before(deadline) {
		if err := r.sys.InsertOne(ctx, conn, r, event{K: -1, Agg: -1, Seq: 0}); err != nil {
			return fmt.Errorf("warm-up write: %w", err)
		}
		if col.waitSentinel(ctx, time.Second) {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("relay exited during warm-up: %v\n%s", p.err, p.tail())
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return fmt.Errorf("no warm-up event in Kafka after %s; relay log:\n%s", sentinelTimeout, p.tail())
}

func drain(ctx context.Context, r *run, res *result, conn *pgx.Conn, pp **proc, col *collector, n int) error {
	sc := r.sc
	// The relay stops; the backlog is committed while it is down.
	(*pp).stop()
	t := time.Now()
	const batch = 1000
	evs := make([]event, 0, batch)
	for k := 0; k < n; k++ {
		evs = append(evs, event{K: k, Agg: k % sc.Aggregates, Seq: int64(k/sc.Aggregates) + 1})
		if len(evs) == batch || k == n-1 {
			if err := r.sys.InsertBatch(ctx, conn, r, evs); err != nil {
				return fmt.Errorf("load backlog: %w", err)
			}
			evs = evs[:0]
		}
	}
	res.LoadSeconds = time.Since(t).Seconds()
	res.Committed = n

	p, err := r.sys.Start(ctx, r)
	if err != nil {
		return fmt.Errorf("restart relay: %w", err)
	}
	*pp = p
	deadline := p.t0.Add(drainDeadline(n))
	lastCount, lastProgress := col.unique.Load(), time.Now()
	for col.unique.Load() < int64(n) && time.Now().Before(deadline) && !p.exited() && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		if c := col.unique.Load(); c != lastCount {
			lastCount, lastProgress = c, time.Now()
		} else if lastCount > 0 && time.Since(lastProgress) > stallTimeout {
			break // events arrived, then nothing for a long while
		}
	}
	complete := col.unique.Load() >= int64(n)
	cpu, _ := p.cpu()
	res.CPUSeconds = cpu
	res.PeakRSSMB = p.rssMB()
	if complete {
		time.Sleep(2 * time.Second) // late duplicates
	}
	s := col.snapshot(nil)
	fill(res, s, complete)
	if !s.firstAt.IsZero() {
		res.StartupSeconds = s.firstAt.Sub(p.t0).Seconds()
	}
	if complete {
		res.DrainSeconds = s.lastAt.Sub(p.t0).Seconds()
		res.DrainEvPS = float64(n) / res.DrainSeconds
		if d := s.lastAt.Sub(s.firstAt).Seconds(); d > 0 {
			res.SteadyEvPS = float64(n-1) / d
		}
	}
	if s.unique > 0 {
		res.CPUmsPer1k = cpu * 1e6 / float64(s.unique)
	}
	if p.exited() {
		return fmt.Errorf("relay exited during the drain: %v\n%s", p.err, p.tail())
	}
	if !complete {
		return fmt.Errorf("drain incomplete: %d of %d events after %s", s.unique, n, drainDeadline(n))
	}
	return nil
}

func drainDeadline(n int) time.Duration {
	d := time.Duration(n/200) * time.Second // a floor of 200 events/s
	if d < 120*time.Second {
		d = 120 * time.Second
	}
	return d
}

func fill(res *result, s collected, complete bool) {
	res.Delivered = s.unique
	res.Lost = len(s.missing)
	res.Duplicates = s.dups
	res.OutOfOrder = s.outOfOrder
	res.Phantoms = s.phantoms
	res.Undecodable = s.undecodable
	res.Complete = complete
}

func fixedRate(ctx context.Context, r *run, res *result, p *proc, col *collector, n int) error {
	sc := r.sc
	o := r.env.o
	conns := make([]*pgx.Conn, o.writers)
	for i := range conns {
		c, err := pgx.Connect(ctx, r.dsn)
		if err != nil {
			return err
		}
		defer c.Close(context.Background())
		conns[i] = c
	}
	res.OfferedRate = sc.Rate
	var cpu0 float64
	var err error

	committed := make([]bool, n)
	var nCommitted, warmCommitted atomic.Int64
	sentinelBase := col.sentinels.Load()
	// lag counts the warm-up events too: a relay still working through
	// them is behind by them.
	lag := func() int64 {
		return warmCommitted.Load() + nCommitted.Load() - (col.sentinels.Load() - sentinelBase) - col.unique.Load()
	}
	var writeErrs atomic.Int64
	var firstErr atomic.Value

	// Lag: committed − consumed, every 100 ms.
	var maxLag atomic.Int64
	stopSampler := make(chan struct{})
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stopSampler:
				return
			case <-tk.C:
				if lag := lag(); lag > maxLag.Load() {
					maxLag.Store(lag)
				}
			}
		}
	}()

	// Open loop: event k is due at start + k/rate, whatever happened
	// before. Aggregate a belongs to writer a % writers, so one aggregate's
	// events commit in sequence order.
	chans := make([]chan event, o.writers)
	var wg sync.WaitGroup
	for w := range chans {
		chans[w] = make(chan event, 4096)
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for ev := range chans[w] {
				if err := r.sys.InsertOne(ctx, conns[w], r, ev); err != nil {
					writeErrs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				if ev.K >= 0 {
					committed[ev.K] = true
					nCommitted.Add(1)
				} else {
					warmCommitted.Add(1)
				}
			}
		}(w)
	}
	// The first warm events (flagged as sentinels, not counted) bring the
	// relay to its steady state at this rate (a JVM's JIT, connection
	// pools); the measured events follow on the same schedule.
	warm := sc.Rate * int(o.rateWarmup/time.Second)
	start := time.Now()
	var measuredStart time.Time
	period := time.Second / time.Duration(sc.Rate)
	for j := 0; j < warm+n && ctx.Err() == nil; j++ {
		if d := time.Until(start.Add(time.Duration(j) * period)); d > 0 {
			time.Sleep(d)
		}
		if j < warm {
			agg := j % sc.Aggregates
			chans[agg%o.writers] <- event{K: -1, Agg: agg}
			continue
		}
		if j == warm {
			measuredStart = time.Now()
			if cpu0, err = p.cpu(); err != nil {
				return err
			}
		}
		k := j - warm
		agg := k % sc.Aggregates
		chans[agg%o.writers] <- event{K: k, Agg: agg, Seq: int64(k/sc.Aggregates) + 1}
	}
	for _, c := range chans {
		close(c)
	}
	wg.Wait()
	end := time.Now()
	total := int(nCommitted.Load())
	res.Committed = total
	res.WriteErrors = int(writeErrs.Load())
	res.AchievedRate = float64(total) / end.Sub(measuredStart).Seconds()
	res.EndLag = int(lag())

	// Catch-up: wait for everything while the relay makes progress (a
	// relay that fell behind works through its backlog, so that lost and
	// duplicated are judged on everything), up to catchUpMax.
	deadline := end.Add(catchUpMax)
	lastCount, lastProgress := col.unique.Load(), time.Now()
	for col.unique.Load() < int64(total) && time.Now().Before(deadline) && !p.exited() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
		if c := col.unique.Load(); c != lastCount {
			lastCount, lastProgress = c, time.Now()
		} else if time.Since(lastProgress) > stallTimeout {
			break
		}
	}
	doneAt := time.Now()
	complete := col.unique.Load() >= int64(total)
	cpu1, _ := p.cpu()
	res.PeakRSSMB = p.rssMB()
	close(stopSampler)
	<-samplerDone
	res.MaxLag = int(maxLag.Load())
	if complete {
		time.Sleep(time.Second) // late duplicates
	}
	s := col.snapshot(committed)
	fill(res, s, complete)
	if complete {
		res.CatchUpSeconds = s.lastAt.Sub(end).Seconds()
		if res.CatchUpSeconds < 0 {
			res.CatchUpSeconds = 0
		}
	} else {
		res.CatchUpSeconds = doneAt.Sub(end).Seconds()
	}
	res.CPUSeconds = cpu1 - cpu0
	if s.unique > 0 {
		res.CPUmsPer1k = res.CPUSeconds * 1e6 / float64(s.unique)
	}
	lat := s.latMS
	sort.Float64s(lat)
	res.P50ms, res.P95ms, res.P99ms = pct(lat, 0.50), pct(lat, 0.95), pct(lat, 0.99)
	if len(lat) > 0 {
		res.MaxMS = lat[len(lat)-1]
	}
	// Kept up: everything committed in the window arrived within
	// keptUpGrace after the writers stopped. A relay slower than the rate
	// ends the window with a lag that grows with the window (its catch-up
	// takes lag / its rate); a relay that only batches or polls (Debezium's
	// poll.interval.ms, Watermill's PollInterval) ends it a poll interval
	// behind and catches up at once.
	res.KeptUp = complete && res.CatchUpSeconds <= keptUpGrace.Seconds()
	if p.exited() {
		return fmt.Errorf("relay exited during the run: %v\n%s", p.err, p.tail())
	}
	if v := firstErr.Load(); v != nil {
		logf("%s: %d write error(s), first: %v", r.db, res.WriteErrors, v)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !complete {
		return fmt.Errorf("incomplete: %d of %d committed events arrived; the wait ended %.0f s after the writers stopped", s.unique, total, res.CatchUpSeconds)
	}
	return nil
}

// pct is the nearest-rank percentile of sorted values.
func pct(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}
