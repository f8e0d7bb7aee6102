package bench

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// seconds is a duration flag that takes a number of seconds (10, 2.5) or
// a Go duration (10s, 1m30s, 500ms): --stage-seconds 3 and
// --stage-seconds 3s mean the same.
type seconds time.Duration

func (s *seconds) String() string { return time.Duration(*s).String() }
func (s *seconds) Type() string   { return "seconds" }

func (s *seconds) Set(v string) error {
	v = strings.TrimSpace(v)
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f <= 0 || f > 1e6 {
			return fmt.Errorf("want a positive number of seconds (e.g. 10 or 2.5) or a duration (e.g. 10s, 500ms)")
		}
		*s = seconds(time.Duration(f * float64(time.Second)))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return fmt.Errorf("want a positive number of seconds (e.g. 10 or 2.5) or a duration (e.g. 10s, 500ms)")
	}
	*s = seconds(d)
	return nil
}

// ints is a comma-separated list of positive integers (10000,100000).
type ints []int

func (l *ints) String() string {
	s := make([]string, len(*l))
	for i, n := range *l {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
func (l *ints) Type() string { return "list" }

func (l *ints) Set(v string) error {
	var out []int
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(strings.ReplaceAll(f, "_", ""))
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return fmt.Errorf("want comma-separated whole numbers (e.g. 10000,100000), got %q", f)
		}
		out = append(out, n)
	}
	*l = out
	return nil
}
