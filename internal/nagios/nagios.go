// Package nagios holds the conventions of Nagios/Icinga monitoring plugins
// (the Monitoring Plugins Development Guidelines): the four states and
// their exit codes, threshold ranges ("10", "10:", "~:10", "10:20",
// "@10:20") and performance data ('label'=value[UOM];warn;crit;min;max,
// numbers in the C locale).
package nagios

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// State is a plugin's result; its value is the exit code.
type State int

// The plugin states, in exit-code order.
const (
	OK       State = 0
	Warning  State = 1
	Critical State = 2
	Unknown  State = 3
)

func (s State) String() string {
	switch s {
	case OK:
		return "OK"
	case Warning:
		return "WARNING"
	case Critical:
		return "CRITICAL"
	}
	return "UNKNOWN"
}

// Worse returns the more severe of two states: CRITICAL over WARNING over
// UNKNOWN over OK (UNKNOWN does not hide a known problem).
func Worse(a, b State) State {
	rank := func(s State) int {
		switch s {
		case Critical:
			return 3
		case Warning:
			return 2
		case Unknown:
			return 1
		}
		return 0
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// Range is a threshold range. A value alerts when it lies outside
// [Start, End], or inside it when Inside is set (the "@" prefix).
type Range struct {
	Start, End float64 // -Inf / +Inf for an open end
	Inside     bool
	text       string
}

// ParseRange parses the guidelines' range syntax:
//
//	10      alert if < 0 or > 10
//	10:     alert if < 10
//	~:10    alert if > 10
//	10:20   alert if < 10 or > 20
//	@10:20  alert if ≥ 10 and ≤ 20
//
// Numbers may be negative or decimal; start must not exceed end.
func ParseRange(s string) (Range, error) {
	r := Range{text: s}
	body := s
	if rest, ok := strings.CutPrefix(body, "@"); ok {
		r.Inside, body = true, rest
	}
	if body == "" {
		return Range{}, fmt.Errorf("range %q: empty", s)
	}
	num := func(t string) (float64, error) {
		v, err := strconv.ParseFloat(t, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, fmt.Errorf("range %q: %q is not a number", s, t)
		}
		return v, nil
	}
	start, end, hasColon := strings.Cut(body, ":")
	var err error
	if !hasColon {
		r.Start = 0
		if r.End, err = num(start); err != nil {
			return Range{}, err
		}
	} else {
		switch start {
		case "~":
			r.Start = math.Inf(-1)
		case "":
			return Range{}, fmt.Errorf("range %q: no start before ':' (a number, or ~ for none)", s)
		default:
			if r.Start, err = num(start); err != nil {
				return Range{}, err
			}
		}
		if end == "" {
			r.End = math.Inf(1)
		} else if r.End, err = num(end); err != nil {
			return Range{}, err
		}
	}
	if r.Start > r.End {
		return Range{}, fmt.Errorf("range %q: start %v is greater than end %v", s, r.Start, r.End)
	}
	return r, nil
}

// Alerts reports whether v is outside the range (inside, for "@").
func (r Range) Alerts(v float64) bool {
	in := v >= r.Start && v <= r.End
	if r.Inside {
		return in
	}
	return !in
}

// String is the range as it was given.
func (r Range) String() string { return r.text }

// Threshold is an optional warning and critical range for one value.
type Threshold struct {
	Warn, Crit *Range
}

// State is the state of v under the threshold: CRITICAL, WARNING or OK.
func (t Threshold) State(v float64) State {
	switch {
	case t.Crit != nil && t.Crit.Alerts(v):
		return Critical
	case t.Warn != nil && t.Warn.Alerts(v):
		return Warning
	}
	return OK
}

// Perf is one performance data item.
type Perf struct {
	Label string
	Value float64
	UOM   string // "", "%", "s", "B", "c" (a counter) …
	Threshold
	Min, Max *float64
}

// Number formats a number in the C locale: a dot, no grouping, no
// exponent, as few digits as needed.
func Number(v float64) string {
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// String formats the item: 'label'=value[UOM];[warn];[crit];[min];[max],
// with trailing empty fields left out.
func (p Perf) String() string {
	label := strings.ReplaceAll(p.Label, "'", "''")
	fields := []string{Number(p.Value) + p.UOM, "", "", "", ""}
	if p.Warn != nil {
		fields[1] = p.Warn.String()
	}
	if p.Crit != nil {
		fields[2] = p.Crit.String()
	}
	if p.Min != nil {
		fields[3] = Number(*p.Min)
	}
	if p.Max != nil {
		fields[4] = Number(*p.Max)
	}
	n := len(fields)
	for n > 1 && fields[n-1] == "" {
		n--
	}
	return "'" + label + "'=" + strings.Join(fields[:n], ";")
}

// Float returns a pointer to v, for Perf's Min and Max.
func Float(v float64) *float64 { return &v }
