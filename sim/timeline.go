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

// Schema is the version string of the JSON simulation result. v2: "full"
// means the count reached the max (v1's "full" meant "packets dropped"
// and its "filled" was sampled); the drops' cause and times by cause.
const Schema = "ctdoctor.simulation/v2"

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

	// Peak is the highest count during the run, first reached at PeakAt.
	// The simulator reads the count at every insert (the only time it
	// grows), so Peak is exact where the timeline's samples may miss it.
	Peak   int
	PeakAt time.Duration
	// FullAt is when the count first reached nf_conntrack_max, -1 if it
	// never did (exact, like Peak). This is what "full" means everywhere
	// in a result: the count at the max, whether or not packets were
	// dropped (early drop may have made room each time).
	FullAt time.Duration
	// FirstDrop is the virtual time of the first packet conntrack dropped,
	// for any cause, -1 if none was. FirstTableFullDrop and FirstChainDrop
	// split it by cause: the table full with nothing early drop could
	// evict (the kernel's drop counter), or a hash chain too long to join
	// (insert_failed and chaintoolong), which happens with room left.
	FirstDrop, FirstTableFullDrop, FirstChainDrop time.Duration
	// DroppedPackets counts the packets conntrack dropped, all causes.
	DroppedPackets uint64
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
	if len(r.Timeline) == 0 {
		return
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

// Cause is the outcome of a run, the reason its verdict gives.
type Cause string

// The causes, worst first.
const (
	// CauseTableFull: the count reached nf_conntrack_max and conntrack
	// dropped new connections' packets for want of a free entry (early drop
	// found nothing to evict): the kernel's drop counter. Drops on hash
	// chains too long may come on top.
	CauseTableFull Cause = "table_full"
	// CauseChainTooLong: conntrack dropped new connections' packets because
	// the hash chain they would join was too long (insert_failed,
	// chaintoolong), never for want of room: the table has too few buckets
	// for its entries.
	CauseChainTooLong Cause = "chain_too_long"
	// CauseFullNoDrops: the count reached the max but no packet was
	// dropped: early drop evicted an unassured entry for each new one.
	CauseFullNoDrops Cause = "full_no_drops"
	// CauseNearFull: no drops, and the count peaked at 90% of the max or more.
	CauseNearFull Cause = "near_full"
	// CauseOK: no drops, and the count stayed below 90% of the max.
	CauseOK Cause = "ok"
)

// Full reports whether the table was full: the count reached
// nf_conntrack_max at some moment of the run (at FullAt).
func (r *Result) Full() bool { return r.FullAt >= 0 }

// Dropped reports whether conntrack dropped packets, for any cause.
func (r *Result) Dropped() bool { return r.DroppedPackets > 0 || r.FirstDrop >= 0 }

// Cause classifies the run: the drops' cause if conntrack dropped
// packets, else how close the count came to the max.
func (r *Result) Cause() Cause {
	switch {
	case r.Drop > 0 || r.FirstTableFullDrop >= 0:
		return CauseTableFull
	case r.Dropped():
		return CauseChainTooLong
	case r.Full():
		return CauseFullNoDrops
	case float64(r.Peak) >= 0.9*float64(r.Max):
		return CauseNearFull
	}
	return CauseOK
}

// Verdict is the one-line answer, naming the cause: "table full at
// hh:mm:ss, N packets dropped", "hash chains too long at hh:mm:ss: N
// packets dropped …", "table full at hh:mm:ss without drops …" or "table
// never fills …". Its times are FullAt and FirstChainDrop.
func (r *Result) Verdict() string {
	th := func(n uint64) string { return Thousands(int64(n)) }
	failed := ""
	if r.Failed > 0 {
		failed = fmt.Sprintf(", %s connections failed", th(r.Failed))
	}
	usage := func() string {
		return fmt.Sprintf("%s of %s entries (%s)", Thousands(int64(r.Peak)), Thousands(int64(r.Max)),
			percent(float64(r.Peak)/float64(max(r.Max, 1))))
	}
	switch r.Cause() {
	case CauseTableFull:
		v := fmt.Sprintf("table full at %s, %s packets dropped", clockTime(max(r.FullAt, 0)), th(r.Drop))
		if r.FirstChainDrop >= 0 {
			v += fmt.Sprintf("; hash chains too long at %s, %s more dropped", clockTime(r.FirstChainDrop), th(r.InsertFailed))
		}
		return v + failed
	case CauseChainTooLong:
		buckets := r.Settings[engine.SetBuckets]
		v := fmt.Sprintf("hash chains too long at %s: %s packets dropped (insert_failed) with the table at most %s in %s bucket%s",
			clockTime(max(r.FirstChainDrop, 0)), th(r.InsertFailed), usage(), Thousands(buckets), plural(buckets))
		if r.Full() {
			v += fmt.Sprintf("; table full at %s", clockTime(r.FullAt))
		}
		return v + failed
	case CauseFullNoDrops:
		if r.EarlyDrop > 0 {
			return fmt.Sprintf("table full at %s without drops: early drop evicted %s unassured entries to make room",
				clockTime(r.FullAt), th(r.EarlyDrop))
		}
		return fmt.Sprintf("table full at %s without drops: no new connection came while it was", clockTime(r.FullAt))
	}
	return fmt.Sprintf("table never fills: peak %s at %s", usage(), clockTime(r.PeakAt))
}

func plural(n int64) string {
	if n == 1 {
		return ""
	}
	return "s"
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

// Summary is the JSON form of a result's summary. Times are seconds of
// virtual time since the start of the run; null means "never".
type Summary struct {
	// Verdict is the text output's verdict line, word for word.
	Verdict string `json:"verdict"`
	// Cause is the verdict's reason: table_full, chain_too_long,
	// full_no_drops, near_full or ok (see [Cause]).
	Cause Cause `json:"cause"`
	// Full: the count reached the max (first at FullAtSeconds), with or
	// without drops. It is the only meaning of "full" in the result.
	Full          bool     `json:"full"`
	FullAtSeconds *float64 `json:"full_at_seconds"`
	// Dropped: conntrack dropped packets (DroppedPackets of them, any
	// cause; the first at FirstDropSeconds). By cause: the table full
	// (counter drop, first at FirstTableFullDropSeconds) and hash chains
	// too long (counter insert_failed, first at FirstChainDropSeconds).
	Dropped                   bool     `json:"dropped"`
	DroppedPackets            uint64   `json:"dropped_packets"`
	FirstDropSeconds          *float64 `json:"first_drop_seconds"`
	FirstTableFullDropSeconds *float64 `json:"first_table_full_drop_seconds"`
	FirstChainDropSeconds     *float64 `json:"first_chain_drop_seconds"`
	// Peak is the highest count at any moment (not only at samples),
	// first reached at PeakAtSeconds.
	Peak          int         `json:"peak"`
	PeakAtSeconds float64     `json:"peak_at_seconds"`
	Steady        TableCounts `json:"steady"`
	Final         TableCounts `json:"final"`
	// The kernel's counters at the end of the run.
	Drop         uint64 `json:"drop"`
	EarlyDrop    uint64 `json:"early_drop"`
	InsertFailed uint64 `json:"insert_failed"`
	ChainTooLong uint64 `json:"chaintoolong"`
	Packets      uint64 `json:"packets"`
	Connections  uint64 `json:"connections"`
	Failed       uint64 `json:"failed_connections"`
	Lost         uint64 `json:"lost_connections"`
	Retransmits  uint64 `json:"retransmits"`
}

// Summarize returns the result's summary in its JSON form.
func (r *Result) Summarize() Summary {
	s := Summary{Verdict: r.Verdict(), Cause: r.Cause(), Full: r.Full(), Dropped: r.Dropped(), DroppedPackets: r.DroppedPackets,
		Peak: r.Peak, PeakAtSeconds: r.PeakAt.Seconds(),
		Steady: counts(r.Steady), Final: counts(r.Final), Drop: r.Drop, EarlyDrop: r.EarlyDrop,
		InsertFailed: r.InsertFailed, ChainTooLong: r.ChainTooLong, Packets: r.Packets,
		Connections: r.Connections, Failed: r.Failed, Lost: r.Lost, Retransmits: r.Retransmits}
	s.FullAtSeconds, s.FirstDropSeconds = optSeconds(r.FullAt), optSeconds(r.FirstDrop)
	s.FirstTableFullDropSeconds, s.FirstChainDropSeconds = optSeconds(r.FirstTableFullDrop), optSeconds(r.FirstChainDrop)
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

// MarshalJSON writes the result (schema [Schema]).
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
