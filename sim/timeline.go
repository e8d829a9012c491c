package sim

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
)

// Schema is the version string of the JSON simulation result.
const Schema = "ctdoctor.simulation/v1"

// Sample is the table at one point of the timeline, with the kernel's
// counters over the step that ends there and since the start.
type Sample struct {
	Time      time.Duration
	Total     int
	TCP       [conntrack.TCPStateCount]int
	UDP       int
	ICMP      int
	Other     int
	Assured   int
	Unreplied int
	Usage     float64 // Total / nf_conntrack_max

	// Counters during the step.
	Drop, EarlyDrop, InsertFailed, ChainTooLong uint64
	// Counters since the start.
	DropTotal, EarlyDropTotal, InsertFailedTotal, ChainTooLongTotal uint64
	// Connections opened and given up during the step.
	Connections, Failed uint64
}

// Result is a simulation's timeline and summary.
type Result struct {
	Scenario    string
	Description string
	Duration    time.Duration
	Step        time.Duration
	Seed        uint64
	Settings    map[string]int64 // every setting, defaults included
	Max         int
	Timeline    []Sample

	// Peak is the highest sampled count, at PeakAt.
	Peak   int
	PeakAt time.Duration
	// FullAt is the first sample time the count reached the max, -1 if never.
	FullAt time.Duration
	// FirstDrop is the virtual time of the first packet conntrack dropped,
	// -1 if none was.
	FirstDrop time.Duration
	// Steady is the mean of the samples in the last tenth of the run (the
	// count a constant workload settles at); Final is the last sample.
	Steady Sample
	Final  Sample
	// Drop … ChainTooLong are the kernel counters at the end.
	Drop, EarlyDrop, InsertFailed, ChainTooLong uint64
	// Packets sent through the tracker, connections opened, connections that
	// gave up after their retransmissions, connections a middlebox lost
	// silently, and packets retransmitted.
	Packets, Connections, Failed, Lost, Retransmits uint64
}

func (r *Result) summarize() {
	r.FullAt = -1
	if len(r.Timeline) == 0 {
		return
	}
	for _, s := range r.Timeline {
		if s.Total > r.Peak {
			r.Peak, r.PeakAt = s.Total, s.Time
		}
		if r.FullAt < 0 && r.Max > 0 && s.Total >= r.Max {
			r.FullAt = s.Time
		}
	}
	r.Final = r.Timeline[len(r.Timeline)-1]
	r.Drop, r.EarlyDrop = r.Final.DropTotal, r.Final.EarlyDropTotal
	r.InsertFailed, r.ChainTooLong = r.Final.InsertFailedTotal, r.Final.ChainTooLongTotal
	from := r.Duration - r.Duration/10
	var sum [6 + conntrack.TCPStateCount]float64
	n := 0
	for _, s := range r.Timeline {
		if s.Time < from || s.Time == 0 {
			continue
		}
		n++
		sum[0] += float64(s.Total)
		sum[1] += float64(s.UDP)
		sum[2] += float64(s.ICMP)
		sum[3] += float64(s.Other)
		sum[4] += float64(s.Assured)
		sum[5] += float64(s.Unreplied)
		for i, v := range s.TCP {
			sum[6+i] += float64(v)
		}
	}
	if n == 0 {
		r.Steady = r.Final
		return
	}
	avg := func(i int) int { return int(math.Round(sum[i] / float64(n))) }
	st := Sample{Time: r.Duration, Total: avg(0), UDP: avg(1), ICMP: avg(2), Other: avg(3), Assured: avg(4), Unreplied: avg(5)}
	for i := range st.TCP {
		st.TCP[i] = avg(6 + i)
	}
	if r.Max > 0 {
		st.Usage = float64(st.Total) / float64(r.Max)
	}
	r.Steady = st
}

// Full reports whether conntrack dropped packets (the table was full and
// nothing could be evicted, or an insert failed) during the run.
func (r *Result) Full() bool { return r.FirstDrop >= 0 || r.Drop > 0 }

// Filled reports whether the count reached the max at a sample, with or
// without drops (early drop may have made room each time).
func (r *Result) Filled() bool { return r.FullAt >= 0 }

// Verdict is the one-line answer: "table never fills …" or "table full at
// hh:mm:ss, N packets dropped".
func (r *Result) Verdict() string {
	if !r.Full() && r.Filled() {
		return fmt.Sprintf("table full at %s without drops: early drop evicted %s unassured entries to make room",
			clockTime(r.FullAt), Thousands(int64(r.EarlyDrop)))
	}
	if !r.Full() {
		return fmt.Sprintf("table never fills: peak %s of %s (%s) at %s", Thousands(int64(r.Peak)), Thousands(int64(r.Max)),
			percent(float64(r.Peak)/float64(max(r.Max, 1))), clockTime(r.PeakAt))
	}
	at := r.FirstDrop
	if at < 0 {
		at = r.FullAt
	}
	v := fmt.Sprintf("table full at %s, %s packets dropped", clockTime(max(at, 0)), Thousands(int64(r.Drop)))
	if r.Failed > 0 {
		v += fmt.Sprintf(", %s connections failed", Thousands(int64(r.Failed)))
	}
	return v
}

// Clock formats a virtual time as hh:mm:ss since the start of the run.
func Clock(d time.Duration) string { return clockTime(d) }

func percent(x float64) string {
	switch {
	case x > 0 && x < 0.01:
		return fmt.Sprintf("%.2f%%", x*100)
	case x >= 0.995 && x < 1:
		return fmt.Sprintf("%.1f%%", x*100)
	}
	return fmt.Sprintf("%.0f%%", x*100)
}

// Thousands formats n with thousands separators (1,234,567).
func Thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// StateNames are the TCP states in the order the timeline reports them
// (NONE left out: no entry is ever in it).
var StateNames = []conntrack.TCPState{conntrack.TCPSynSent, conntrack.TCPSynRecv, conntrack.TCPEstablished,
	conntrack.TCPFinWait, conntrack.TCPCloseWait, conntrack.TCPLastAck, conntrack.TCPTimeWait,
	conntrack.TCPClose, conntrack.TCPSynSent2}

func stateKey(s conntrack.TCPState) string {
	b := []byte(s.String())
	for i, c := range b {
		switch {
		case c >= 'A' && c <= 'Z':
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// csvHeader lists the timeline's columns (CSV, and the JSON sample keys).
func csvHeader() []string {
	h := []string{"time_s", "total"}
	for _, st := range StateNames {
		h = append(h, stateKey(st))
	}
	return append(h, "udp", "icmp", "other", "assured", "unreplied", "usage",
		"drop", "early_drop", "insert_failed", "chaintoolong",
		"drop_total", "early_drop_total", "insert_failed_total", "chaintoolong_total",
		"connections", "failed")
}

func (s *Sample) fields() []any {
	f := []any{s.Time.Seconds(), s.Total}
	for _, st := range StateNames {
		f = append(f, s.TCP[st])
	}
	return append(f, s.UDP, s.ICMP, s.Other, s.Assured, s.Unreplied, math.Round(s.Usage*1e4)/1e4,
		s.Drop, s.EarlyDrop, s.InsertFailed, s.ChainTooLong,
		s.DropTotal, s.EarlyDropTotal, s.InsertFailedTotal, s.ChainTooLongTotal,
		s.Connections, s.Failed)
}

// MarshalJSON writes a sample as one flat object (the CSV's columns).
func (s Sample) MarshalJSON() ([]byte, error) {
	h := csvHeader()
	f := s.fields()
	b := []byte{'{'}
	for i, k := range h {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, k)
		b = append(b, ':')
		v, err := json.Marshal(f[i])
		if err != nil {
			return nil, err
		}
		b = append(b, v...)
	}
	return append(b, '}'), nil
}

// WriteCSV writes the timeline as CSV with a header line.
func (r *Result) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHeader()); err != nil {
		return err
	}
	rec := make([]string, 0, len(csvHeader()))
	for i := range r.Timeline {
		rec = rec[:0]
		for _, v := range r.Timeline[i].fields() {
			switch x := v.(type) {
			case float64:
				rec = append(rec, strconv.FormatFloat(x, 'f', -1, 64))
			default:
				rec = append(rec, fmt.Sprint(x))
			}
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// TableCounts is a table's counts by protocol, TCP state and status, in
// the JSON summaries.
type TableCounts struct {
	Total     int            `json:"total"`
	TCP       map[string]int `json:"tcp"`
	UDP       int            `json:"udp"`
	ICMP      int            `json:"icmp"`
	Other     int            `json:"other"`
	Assured   int            `json:"assured"`
	Unreplied int            `json:"unreplied"`
	Usage     float64        `json:"usage"`
}

func counts(s Sample) TableCounts {
	c := TableCounts{Total: s.Total, TCP: map[string]int{}, UDP: s.UDP, ICMP: s.ICMP, Other: s.Other,
		Assured: s.Assured, Unreplied: s.Unreplied, Usage: math.Round(s.Usage*1e4) / 1e4}
	for _, st := range StateNames {
		c.TCP[st.String()] = s.TCP[st]
	}
	return c
}

// sampleCounts fills a sample's table counts; usage is against max when
// max > 0.
func sampleCounts(smp *Sample, c engine.Counts, max int) {
	smp.Total, smp.TCP, smp.UDP, smp.ICMP, smp.Other = c.Total, c.TCP, c.UDP, c.ICMP, c.Other
	smp.Assured, smp.Unreplied = c.Assured, c.Unreplied
	if max > 0 {
		smp.Usage = float64(c.Total) / float64(max)
	}
}

// CountsOf returns a tracker's counts now, in the JSON form.
func CountsOf(tr *engine.Tracker) TableCounts {
	var smp Sample
	sampleCounts(&smp, tr.Counts(), int(tr.Settings()[engine.SetMax]))
	return counts(smp)
}

// Summary is the JSON form of a result's summary.
type Summary struct {
	Verdict          string      `json:"verdict"`
	Full             bool        `json:"full"`
	Filled           bool        `json:"filled"`
	FirstDropSeconds *float64    `json:"first_drop_seconds"`
	FullAtSeconds    *float64    `json:"full_at_seconds"`
	Peak             int         `json:"peak"`
	PeakAtSeconds    float64     `json:"peak_at_seconds"`
	Steady           TableCounts `json:"steady"`
	Final            TableCounts `json:"final"`
	Drop             uint64      `json:"drop"`
	EarlyDrop        uint64      `json:"early_drop"`
	InsertFailed     uint64      `json:"insert_failed"`
	ChainTooLong     uint64      `json:"chaintoolong"`
	Packets          uint64      `json:"packets"`
	Connections      uint64      `json:"connections"`
	Failed           uint64      `json:"failed_connections"`
	Lost             uint64      `json:"lost_connections"`
	Retransmits      uint64      `json:"retransmits"`
}

// Summarize returns the result's summary in its JSON form.
func (r *Result) Summarize() Summary {
	s := Summary{Verdict: r.Verdict(), Full: r.Full(), Filled: r.Filled(), Peak: r.Peak, PeakAtSeconds: r.PeakAt.Seconds(),
		Steady: counts(r.Steady), Final: counts(r.Final), Drop: r.Drop, EarlyDrop: r.EarlyDrop,
		InsertFailed: r.InsertFailed, ChainTooLong: r.ChainTooLong, Packets: r.Packets,
		Connections: r.Connections, Failed: r.Failed, Lost: r.Lost, Retransmits: r.Retransmits}
	s.FirstDropSeconds, s.FullAtSeconds = optSeconds(r.FirstDrop), optSeconds(r.FullAt)
	return s
}

// optSeconds returns a time in seconds, or nil for a negative one
// ("never").
func optSeconds(d time.Duration) *float64 {
	if d < 0 {
		return nil
	}
	v := d.Seconds()
	return &v
}

// MarshalJSON writes the result (schema ctdoctor.simulation/v1).
func (r *Result) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Schema      string           `json:"schema"`
		Scenario    string           `json:"scenario"`
		Description string           `json:"description,omitempty"`
		Duration    float64          `json:"duration_seconds"`
		Step        float64          `json:"step_seconds"`
		Seed        uint64           `json:"seed"`
		Max         int              `json:"max"`
		Settings    map[string]int64 `json:"settings"`
		Summary     Summary          `json:"summary"`
		Timeline    []Sample         `json:"timeline"`
	}{Schema, r.Scenario, r.Description, r.Duration.Seconds(), r.Step.Seconds(), r.Seed, r.Max,
		r.Settings, r.Summarize(), r.Timeline})
}
