package nagios

import (
	"math"
	"testing"
)

// The guidelines' examples, value by value.
func TestRanges(t *testing.T) {
	for _, c := range []struct {
		spec   string
		alerts []float64
		quiet  []float64
	}{
		{"10", []float64{-1, 10.5, 11}, []float64{0, 5, 10}},
		{"10:", []float64{-5, 9.99}, []float64{10, 11, 1e9}},
		{"~:10", []float64{10.01, 11}, []float64{-1e9, 0, 10}},
		{"10:20", []float64{9, 21}, []float64{10, 15, 20}},
		{"@10:20", []float64{10, 15, 20}, []float64{9.9, 20.1}},
		{"0", []float64{0.001, 1}, []float64{0}},
		{"-5:-1", []float64{0, -6}, []float64{-5, -1}},
		{"@~:0.5", []float64{-3, 0.5}, []float64{0.6}},
		{"1.5:", []float64{1.4}, []float64{1.5}},
	} {
		r, err := ParseRange(c.spec)
		if err != nil {
			t.Errorf("%q: %v", c.spec, err)
			continue
		}
		for _, v := range c.alerts {
			if !r.Alerts(v) {
				t.Errorf("%q: %v should alert", c.spec, v)
			}
		}
		for _, v := range c.quiet {
			if r.Alerts(v) {
				t.Errorf("%q: %v should not alert", c.spec, v)
			}
		}
		if r.String() != c.spec {
			t.Errorf("%q prints as %q", c.spec, r.String())
		}
	}
	r, _ := ParseRange("10:")
	if !math.IsInf(r.End, 1) || r.Start != 10 {
		t.Errorf("10: is [%v, %v]", r.Start, r.End)
	}
}

func TestBadRanges(t *testing.T) {
	for _, s := range []string{"", "@", "abc", "10:5", "~", ":", "1:x", "NaN", "Inf", "10::20", "1e", ":10"} {
		if _, err := ParseRange(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

func TestThresholdAndWorse(t *testing.T) {
	w, _ := ParseRange("80")
	c, _ := ParseRange("90")
	th := Threshold{Warn: &w, Crit: &c}
	for v, want := range map[float64]State{50: OK, 80: OK, 85: Warning, 90: Warning, 95: Critical} {
		if got := th.State(v); got != want {
			t.Errorf("%v: %v, want %v", v, got, want)
		}
	}
	if Worse(OK, Unknown) != Unknown || Worse(Unknown, Warning) != Warning || Worse(Critical, Warning) != Critical || Worse(Warning, OK) != Warning {
		t.Error("Worse orders CRITICAL > WARNING > UNKNOWN > OK")
	}
	if int(Critical) != 2 || int(Unknown) != 3 || Critical.String() != "CRITICAL" {
		t.Error("states are the exit codes")
	}
}

func TestPerfFormat(t *testing.T) {
	w, _ := ParseRange("80")
	c, _ := ParseRange("90")
	for _, c := range []struct {
		p    Perf
		want string
	}{
		{Perf{Label: "usage", Value: 217.98, UOM: "%", Threshold: Threshold{&w, &c}, Min: Float(0), Max: Float(100)}, "'usage'=217.98%;80;90;0;100"},
		{Perf{Label: "entries", Value: 36271, Min: Float(0), Max: Float(16640)}, "'entries'=36271;;;0;16640"},
		{Perf{Label: "drop", Value: 12107, UOM: "c"}, "'drop'=12107c"},
		{Perf{Label: "it's", Value: 0.000125}, "'it''s'=0.000125"},
		{Perf{Label: "big", Value: 1e21}, "'big'=1000000000000000000000"},
	} {
		if got := c.p.String(); got != c.want {
			t.Errorf("got %s, want %s", got, c.want)
		}
	}
}
