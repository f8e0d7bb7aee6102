package main

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// summary is one figure of one system in one scenario over the rounds
// that completed: median, min and max.
type summary struct {
	System   string  `json:"system"`
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Median   float64 `json:"median"`
	Min      float64 `json:"min"`
	Max      float64 `json:"max"`
	N        int     `json:"n"`
}

func metricsOf(r *result) map[string]float64 {
	m := map[string]float64{"cpu_ms_per_1k": r.CPUmsPer1k, "peak_rss_mb": r.PeakRSSMB}
	if r.Kind == "drain" {
		if r.Complete {
			m["drain_evps"] = r.DrainEvPS
			m["steady_evps"] = r.SteadyEvPS
			m["startup_s"] = r.StartupSeconds
		}
		m["load_s"] = r.LoadSeconds
	} else {
		m["p50_ms"], m["p95_ms"], m["p99_ms"], m["max_ms"] = r.P50ms, r.P95ms, r.P99ms, r.MaxMS
		m["achieved_rate"] = r.AchievedRate
		m["end_lag"] = float64(r.EndLag)
		m["max_lag"] = float64(r.MaxLag)
		m["catch_up_s"] = r.CatchUpSeconds
	}
	return m
}

func summarize(rep *report) []summary {
	type key struct{ sys, sc, m string }
	vals := map[key][]float64{}
	for _, r := range rep.Results {
		if r.Disrupted || (r.Error != "" && !(r.Kind == "rate" && r.Committed > 0)) {
			continue
		}
		for m, v := range metricsOf(r) {
			k := key{r.System, r.Scenario, m}
			vals[k] = append(vals[k], v)
		}
	}
	var out []summary
	for k, v := range vals {
		sort.Float64s(v)
		out = append(out, summary{System: k.sys, Scenario: k.sc, Metric: k.m, Median: median(v), Min: v[0], Max: v[len(v)-1], N: len(v)})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.System != b.System {
			return a.System < b.System
		}
		if a.Scenario != b.Scenario {
			return a.Scenario < b.Scenario
		}
		return a.Metric < b.Metric
	})
	return out
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func find(rep *report, sys, sc, m string) (summary, bool) {
	for _, s := range rep.Summary {
		if s.System == sys && s.Scenario == sc && s.Metric == m {
			return s, true
		}
	}
	return summary{}, false
}

// cell formats "median (min–max)" with the given number format.
func cell(rep *report, sys, sc, m, f string) string {
	s, ok := find(rep, sys, sc, m)
	if !ok || s.N == 0 {
		return "—"
	}
	if s.N == 1 || s.Min == s.Max {
		return fmt.Sprintf(f, s.Median)
	}
	return fmt.Sprintf(f+" ("+f+"–"+f+")", s.Median, s.Min, s.Max)
}

func resultsOf(rep *report, sys, sc string) []*result {
	var out []*result
	for _, r := range rep.Results {
		if r.System == sys && r.Scenario == sc && !r.Disrupted {
			out = append(out, r)
		}
	}
	return out
}

func keptUpCell(rep *report, sys string, sc scenario) string {
	rs := resultsOf(rep, sys, sc.Name)
	if len(rs) == 0 {
		return "—"
	}
	kept, ran := 0, 0
	var lags []float64
	for _, r := range rs {
		if r.Committed == 0 {
			continue
		}
		ran++
		if r.KeptUp {
			kept++
		} else {
			lags = append(lags, float64(r.EndLag))
		}
	}
	if ran == 0 {
		return "failed"
	}
	if kept == ran {
		return fmt.Sprintf("yes (%d/%d)", kept, ran)
	}
	sort.Float64s(lags)
	lag := median(lags)
	behind := fmt.Sprintf("falls behind (%d/%d rounds): lag %s events ≈ %.1f s of writes when the writers stopped (median)", ran-kept, ran,
		thousands(lag), lag/float64(sc.Rate))
	return behind
}

func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func markdown(rep *report) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	o := rep.Options
	w("## Results (run %s, %s)\n\n", rep.RunID, rep.Started.Format("2006-01-02 15:04 MST"))
	w("Each cell: median of %d round(s) (min–max). Rounds interleave the systems: each scenario runs for every system in turn, then the next scenario, then the next round.\n\n", o.Rounds)

	var drains, rates []scenario
	for _, sc := range rep.Scenarios {
		if sc.Kind == "drain" {
			drains = append(drains, sc)
		} else {
			rates = append(rates, sc)
		}
	}
	headline(w, rep, drains, rates)
	if len(drains) > 0 {
		w("### Drain: a backlog committed while the relay was stopped\n\n")
		w("events/s from the relay's start to the last event consumed; \"steady\" is from the first to the last event consumed (without the start-up); start-up is the relay's start → first event consumed.\n\n")
		w("| system |")
		for _, sc := range drains {
			w(" %s: %s ev over %s aggregates, ev/s | steady ev/s | start-up s |", sc.Name, thousands(float64(sc.Events)), thousands(float64(sc.Aggregates)))
		}
		w("\n|---|")
		for range drains {
			w("---|---|---|")
		}
		w("\n")
		for _, sys := range o.Systems {
			w("| %s |", sys)
			for _, sc := range drains {
				w(" %s | %s | %s |", cell(rep, sys, sc.Name, "drain_evps", "%.0f"), cell(rep, sys, sc.Name, "steady_evps", "%.0f"), cell(rep, sys, sc.Name, "startup_s", "%.1f"))
			}
			w("\n")
		}
		w("\n")
	}
	if len(rates) > 0 {
		w("### Latency at fixed rates: commit → consumed, one event per transaction, %d s per rate\n\n", o.RateSeconds)
		w("| system | rate ev/s | p50 ms | p95 ms | p99 ms | kept up | writers reached ev/s |\n|---|---|---|---|---|---|---|\n")
		for _, sys := range o.Systems {
			for _, sc := range rates {
				w("| %s | %s | %s | %s | %s | %s | %s |\n", sys, thousands(float64(sc.Rate)),
					cell(rep, sys, sc.Name, "p50_ms", "%.1f"), cell(rep, sys, sc.Name, "p95_ms", "%.1f"), cell(rep, sys, sc.Name, "p99_ms", "%.1f"),
					keptUpCell(rep, sys, sc), cell(rep, sys, sc.Name, "achieved_rate", "%.0f"))
			}
		}
		w("\n")
		w("### Relay CPU per 1,000 events (utime+stime of the relay process)\n\n")
		w("| system |")
		for _, sc := range rates {
			w(" at %s ev/s, ms |", thousands(float64(sc.Rate)))
		}
		for _, sc := range drains {
			w(" %s (from process start), ms |", sc.Name)
		}
		w(" peak RSS MiB |\n|---|")
		for range rates {
			w("---|")
		}
		for range drains {
			w("---|")
		}
		w("---|\n")
		for _, sys := range o.Systems {
			w("| %s |", sys)
			for _, sc := range rates {
				w(" %s |", cell(rep, sys, sc.Name, "cpu_ms_per_1k", "%.1f"))
			}
			for _, sc := range drains {
				w(" %s |", cell(rep, sys, sc.Name, "cpu_ms_per_1k", "%.1f"))
			}
			w(" %s |\n", maxRSS(rep, sys))
		}
		w("\n")
	}

	w("### Lost, duplicated, out of order (all runs of all scenarios)\n\n")
	w("| system | runs | events committed | lost | duplicated | out of order (per aggregate) | runs that failed |\n|---|---|---|---|---|---|---|\n")
	for _, sys := range o.Systems {
		var runs, committed, lost, dups, ooo, failed int
		var fails []string
		for _, r := range rep.Results {
			if r.System != sys || r.Disrupted {
				continue
			}
			runs++
			committed += r.Committed
			lost += r.Lost
			dups += r.Duplicates
			ooo += r.OutOfOrder + r.Phantoms
			if r.Error != "" {
				failed++
				fails = append(fails, fmt.Sprintf("r%d %s", r.Round, r.Scenario))
			}
		}
		f := fmt.Sprint(failed)
		if failed > 0 {
			f += " (" + strings.Join(fails, ", ") + ")"
		}
		w("| %s | %d | %s | %d | %d | %d | %s |\n", sys, runs, thousands(float64(committed)), lost, dups, ooo, f)
	}
	w("\n\"lost\" counts committed events never consumed: a run waits for everything while the relay makes progress (a drain up to max(120 s, events/200 s) after the relay's start, a fixed rate up to 4 min after the writers stop; a wait also ends after 30 s without a new event), so a relay that fell behind is judged on its whole backlog. A run whose wait ended before everything arrived is listed as failed, with how many were missing.\n\n")

	w("### Every run\n\nA run marked disrupted (PostgreSQL restarted by other work on the shared machine, or its writers' connections failed) was run again; it is listed here and left out of every other table.\n\n| round | scenario | system | committed | delivered | ev/s or p50/p95/p99 ms | kept up | CPU ms/1k | lost | dup | ooo | error |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.Results {
		fig := ""
		kept := ""
		if r.Kind == "drain" {
			if r.Complete {
				fig = fmt.Sprintf("%.0f (steady %.0f)", r.DrainEvPS, r.SteadyEvPS)
			}
		} else {
			fig = fmt.Sprintf("%.1f / %.1f / %.1f", r.P50ms, r.P95ms, r.P99ms)
			kept = fmt.Sprint(r.KeptUp)
			if !r.KeptUp {
				kept += fmt.Sprintf(" (end lag %d)", r.EndLag)
			}
		}
		errText := strings.ReplaceAll(strings.SplitN(r.Error, "\n", 2)[0], "|", "/")
		w("| %d | %s | %s | %d | %d | %s | %s | %.1f | %d | %d | %d | %s |\n", r.Round, r.Scenario, r.System, r.Committed, r.Delivered, fig, kept, r.CPUmsPer1k, r.Lost, r.Duplicates, r.OutOfOrder, errText)
	}
	w("\n")

	c := rep.Conditions
	w("### Conditions\n\n")
	w("- date: %s → %s (UTC)\n", rep.Started.Format("2006-01-02 15:04:05"), rep.Finished.Format("15:04:05"))
	w("- machine: %d CPUs (nproc), %s memory, %s, Linux %s; load average at start %s\n", c.NProc, c.MemTotal, c.CPUModel, c.Kernel, c.LoadAvgAtStart)
	w("- shared machine: other work ran at the same time (the busiest processes at start: %s)\n", c.OtherLoad)
	inherited := "none"
	if len(c.InheritedEnv) > 0 {
		inherited = kv(c.InheritedEnv)
	}
	w("- Go runtime settings every relay inherits from the driver's environment: %s\n", inherited)
	w("- PostgreSQL: %s; %s\n", c.PostgreSQL, kv(c.PGSettings))
	w("- Kafka: %s; broker JVM %s; %s\n", c.Kafka, c.KafkaJVM, kv(c.KafkaBroker))
	w("- workload: drains of %s events, ~%d-byte JSON payloads; fixed rates %v ev/s for %d s each with %d writer connections (an aggregate always on the same writer); one aggregate type, one target topic of %d partitions per run, created before the run; %s\n",
		thousands(float64(o.Events)), o.PayloadBytes, o.Rates, o.RateSeconds, o.Writers, o.Partitions, "Go "+c.Go+", "+c.Java)
	w("- versions: %s; outbox at %s\n", kv(c.PeerVersions), c.OutboxCommit)
	w("- configuration:\n")
	for _, sys := range o.Systems {
		w("  - %s: %s\n", sys, rep.Notes[sys])
	}
	w("\n")
	return b.String()
}

func maxRSS(rep *report, sys string) string {
	var m float64
	for _, r := range rep.Results {
		if r.System == sys && r.PeakRSSMB > m {
			m = r.PeakRSSMB
		}
	}
	if m == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f", m)
}

func kv(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}

// headline is the one-table summary: drains, p50/p95/p99 and keeping up
// at each rate, CPU at each rate, and the integrity counts.
func headline(w func(string, ...any), rep *report, drains, rates []scenario) {
	w("### Summary\n\n| system |")
	for _, sc := range drains {
		w(" %s ev/s |", sc.Name)
	}
	for _, sc := range rates {
		w(" p50 / p95 / p99 ms @%s ev/s |", thousands(float64(sc.Rate)))
	}
	for _, sc := range rates {
		w(" CPU ms per 1,000 ev @%s |", thousands(float64(sc.Rate)))
	}
	w(" lost / dup / out of order |\n|---|")
	for i := 0; i < len(drains)+2*len(rates)+1; i++ {
		w("---|")
	}
	w("\n")
	for _, sys := range rep.Options.Systems {
		w("| %s |", sys)
		for _, sc := range drains {
			w(" %s |", cell(rep, sys, sc.Name, "drain_evps", "%.0f"))
		}
		for _, sc := range rates {
			c := fmt.Sprintf("%s / %s / %s", med(rep, sys, sc.Name, "p50_ms"), med(rep, sys, sc.Name, "p95_ms"), med(rep, sys, sc.Name, "p99_ms"))
			if lag, behind := behindLag(rep, sys, sc); behind {
				c += fmt.Sprintf("; **falls behind** (lag %s ev ≈ %.1f s)", thousands(lag), lag/float64(sc.Rate))
			}
			w(" %s |", c)
		}
		for _, sc := range rates {
			w(" %s |", cell(rep, sys, sc.Name, "cpu_ms_per_1k", "%.0f"))
		}
		var lost, dups, ooo, runs int
		for _, r := range rep.Results {
			if r.System == sys && !r.Disrupted {
				runs++
				lost += r.Lost
				dups += r.Duplicates
				ooo += r.OutOfOrder + r.Phantoms
			}
		}
		w(" %d / %d / %d |\n", lost, dups, ooo)
	}
	w("\nDrains and CPU: median (min–max) of the rounds; latencies: medians of the rounds' percentiles (the ranges are in the tables below). A system absent from a column did not run that scenario.\n\n")
}

func med(rep *report, sys, sc, m string) string {
	s, ok := find(rep, sys, sc, m)
	if !ok || s.N == 0 {
		return "—"
	}
	if s.Median >= 100 {
		return fmt.Sprintf("%.0f", s.Median)
	}
	return fmt.Sprintf("%.1f", s.Median)
}

// behindLag is the median end-of-window lag of the rounds that fell
// behind, when most rounds did.
func behindLag(rep *report, sys string, sc scenario) (float64, bool) {
	var lags []float64
	ran := 0
	for _, r := range resultsOf(rep, sys, sc.Name) {
		if r.Committed == 0 {
			continue
		}
		ran++
		if !r.KeptUp {
			lags = append(lags, float64(r.EndLag))
		}
	}
	if len(lags) == 0 || 2*len(lags) < ran {
		return 0, false
	}
	sort.Float64s(lags)
	return median(lags), true
}
