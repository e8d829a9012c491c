package analyze

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ctdoctor/ctdoctor/host"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// KernelVersion is a parsed kernel release ("6.18.44-fc-v669" → 6, 18, 44).
type KernelVersion struct{ Major, Minor, Patch int }

// ParseKernelVersion parses the leading numbers of a kernel release string.
// It returns the zero version when the string does not start with a number.
func ParseKernelVersion(s string) KernelVersion {
	var v [3]int
	for i := range v {
		j := 0
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == 0 {
			break
		}
		v[i], _ = strconv.Atoi(s[:j])
		s = s[j:]
		if !strings.HasPrefix(s, ".") {
			break
		}
		s = s[1:]
	}
	return KernelVersion{v[0], v[1], v[2]}
}

// AtLeast reports whether v ≥ major.minor.
func (v KernelVersion) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

// Known reports whether a version was parsed.
func (v KernelVersion) Known() bool { return v.Major > 0 }

// DefaultSizing returns the bucket count and nf_conntrack_max the kernel
// picks by itself for a 64-bit host with memBytes of RAM (kernel-conntrack.md §1):
// since 5.15 one bucket per 128 KiB, set to 65536 above 1 GiB and 262144
// above 4 GiB, at least 1024, max = buckets; before, 16384 above 1 GiB and
// 65536 above 4 GiB, at least 32, max = 4 × buckets.
//
// Legacy ip_conntrack kernels (RHEL/CentOS 5's 2.6.18) used 16-byte list
// heads and max = 8 × buckets, with 8192 buckets above 1 GiB — 32 entries
// per MB of RAM on x86-64 below that (16640 on a CentOS 5 box with ~520 MiB).
func DefaultSizing(v KernelVersion, memBytes uint64, legacy bool) (buckets, maxEntries int64) {
	const gib = 1 << 30
	if legacy {
		b := int64(memBytes / 16384 / 16)
		if memBytes > gib {
			b = 8192
		}
		b = max(b, 16)
		return b, 8 * b
	}
	b := int64(memBytes / 16384 / 8)
	if !v.Known() || v.AtLeast(5, 15) {
		switch {
		case memBytes > 4*gib:
			b = 262144
		case memBytes > gib:
			b = 65536
		}
		if b < 1024 {
			b = 1024
		}
		b = roundUp(b, 512)
		return b, b
	}
	switch {
	case memBytes > 4*gib:
		b = 65536
	case memBytes > gib:
		b = 16384
	}
	if b < 32 {
		b = 32
	}
	return b, 4 * b
}

func roundUp(n, m int64) int64 { return (n + m - 1) / m * m }

// slabOrDefault returns the per-entry memory to assume: the slab size if
// known, else the object size rounded to 8, else 256 (6.x on x86-64).
func slabOrDefault(slab, obj int64) int64 {
	switch {
	case slab > 0:
		return slab
	case obj > 0:
		return roundUp(obj, 8)
	}
	return 256
}

// TableMemory estimates the kernel memory for entries entries and buckets
// hash buckets: entries × per-entry size + roundup(buckets, 512) × 8.
func TableMemory(entries, buckets, perEntry int64) int64 {
	if entries < 0 {
		entries = 0
	}
	if buckets < 0 {
		buckets = 0
	}
	return entries*perEntry + roundUp(buckets, 512)*8
}

// SuggestMax proposes a table size for a peak count: twice the peak,
// rounded up to a power of two, and never below the current max.
func SuggestMax(peak, current int64) int64 {
	want := int64(65536)
	for want < 2*peak {
		want *= 2
	}
	if want < current {
		want = current
	}
	return want
}

// nearFullUsage is the share of nf_conntrack_max at which a table counts as
// nearly full (table-near-full, netns-near-full, and the sizing proposal).
const nearFullUsage = 0.75

// Sizing is the one proposal a report makes for the table's limit
// (nf_conntrack_max) and its hash size (buckets, the hashsize module
// parameter). It is computed once per report, and every finding that sets
// either uses it, so one report never gives two values for one setting.
// Neither value is ever below the host's current one: the limit is raised
// only when the table is, or was, under pressure, and the buckets only to
// one per allowed entry.
type Sizing struct {
	CurrentMax     int64 `json:"current_max"`     // -1 when unknown
	CurrentBuckets int64 `json:"current_buckets"` // -1 when unknown
	// Max is the proposed limit: CurrentMax when it need not change.
	Max int64 `json:"max"`
	// Buckets is the proposed hash size: CurrentBuckets when it need not change.
	Buckets int64 `json:"buckets"`
	// Peak is the number of entries the new limit is sized for (0 when the
	// limit need not change); MaxReason says where it comes from.
	Peak      int64  `json:"peak,omitempty"`
	MaxReason string `json:"max_reason,omitempty"`
	// BucketsReason says why the hash gets Buckets buckets.
	BucketsReason string `json:"buckets_reason,omitempty"`
	// PerEntryBytes is the memory one entry takes (slab size, else object
	// size rounded to 8, else 256).
	PerEntryBytes int64 `json:"per_entry_bytes"`
	// MemoryAtMaxBytes is the kernel memory of a full table at the proposed
	// sizes (Max entries and Buckets buckets); RAMShare is that share of
	// the host's RAM (0 when unknown).
	MemoryAtMaxBytes int64   `json:"memory_at_max_bytes"`
	RAMShare         float64 `json:"ram_share,omitempty"`
}

// RaiseMax reports whether the proposal changes nf_conntrack_max.
func (z *Sizing) RaiseMax() bool { return z.Max > 0 && z.Max != z.CurrentMax }

// RaiseBuckets reports whether the proposal changes the hash size.
func (z *Sizing) RaiseBuckets() bool { return z.Buckets > 0 && z.Buckets != z.CurrentBuckets }

// ProposeSizing returns the sizing proposal of a report (the one its
// findings' fixes use).
func ProposeSizing(s *host.Snapshot, r *Report) Sizing {
	c := &ruleContext{snap: s, r: r, kv: ParseKernelVersion(s.Kernel),
		perEntry: slabOrDefault(s.Settings.SlabSize, s.Settings.ObjectSize), now: r.GeneratedAt}
	return *c.sizing()
}

// sizing returns the report's sizing proposal, computing it on first use.
func (c *ruleContext) sizing() *Sizing {
	if c.size == nil {
		z := c.proposeSizing()
		c.size = &z
	}
	return c.size
}

func (c *ruleContext) proposeSizing() Sizing {
	t := c.r.Table
	z := Sizing{CurrentMax: t.Max, CurrentBuckets: t.Buckets, Max: t.Max, Buckets: t.Buckets, PerEntryBytes: c.perEntry}
	// The most entries the table has had to hold, and why we know.
	var peak int64
	why := ""
	consider := func(n int64, reason string) {
		if n > peak {
			peak, why = n, reason
		}
	}
	if t.Max > 0 && t.Count >= t.Max {
		consider(t.Count, fmt.Sprintf("the table is full, %d entries for a limit of %d", t.Count, t.Max))
	}
	mine, unattributed, _ := c.nsLogEvents()
	if events := mine + unattributed; c.r.Stats.Drop > 0 || events > 0 {
		var seen []string
		if c.r.Stats.Drop > 0 {
			seen = append(seen, fmt.Sprintf("%d packets dropped", c.r.Stats.Drop))
		}
		if events > 0 {
			seen = append(seen, fmt.Sprintf("%d \"table full\" kernel log events", events))
		}
		consider(max(t.Max, t.Count), "the table reached its limit: "+strings.Join(seen, ", "))
	}
	if t.Max > 0 && t.Count >= 0 && t.Usage >= nearFullUsage {
		consider(t.Count, fmt.Sprintf("the table is %s full", pct(t.Usage)))
	}
	for _, ns := range c.snap.AllNetNS {
		if ns.Max > 0 && ns.Error == "" && float64(ns.Count) >= nearFullUsage*float64(ns.Max) {
			consider(ns.Count, fmt.Sprintf("network namespace %s holds %d entries of the global limit %d", ns.Name, ns.Count, ns.Max))
		}
	}
	if peak > 0 {
		if m := SuggestMax(peak, t.Max); m > t.Max {
			z.Max, z.Peak = m, peak
			z.MaxReason = fmt.Sprintf("twice the peak of %d entries (%s), rounded up to a power of two", peak, why)
			if t.Max <= 0 {
				z.MaxReason += "; the current limit is unknown: keep it if it is already higher"
			}
		}
	}
	// One bucket per allowed entry (and at least one per listed entry).
	want := max(z.Max, t.Count)
	if want > 0 {
		want = roundUp(want, 512)
	}
	if want > t.Buckets {
		z.Buckets = want
		limit := "the limit"
		if z.RaiseMax() {
			limit = "the new limit"
		}
		z.BucketsReason = fmt.Sprintf("one bucket per entry of %s, as Linux 5.15 and later size the hash: a full table keeps chains at about 2 nodes", limit)
		if z.Max <= 0 {
			z.BucketsReason = "one bucket per entry listed (the limit is unknown)"
		} else if c.kv.Known() && !c.kv.AtLeast(5, 15) {
			z.BucketsReason += "; this kernel's own default is 4 entries per bucket, but nothing requires it"
		}
	}
	if z.Max > 0 {
		z.MemoryAtMaxBytes = TableMemory(z.Max, z.Buckets, c.perEntry)
		if c.snap.MemBytes > 0 {
			z.RAMShare = float64(z.MemoryAtMaxBytes) / float64(c.snap.MemBytes)
		}
	}
	return z
}

// memoryNote says what a full table costs at the proposed sizes.
func (z *Sizing) memoryNote() string {
	s := fmt.Sprintf("up to %s of kernel memory when full (%d B per entry + 8 B per bucket", HumanBytes(z.MemoryAtMaxBytes), z.PerEntryBytes)
	if z.RAMShare > 0 {
		s += fmt.Sprintf(", %s of RAM", pct(z.RAMShare))
	}
	return s + ")"
}

// limitNotes says in comment lines why the table gets the proposed limit
// (and hash size) and what that costs: the prose before the planner's
// commands for sizingChanges(true). It returns nil when the proposal keeps
// the limit.
func (c *ruleContext) limitNotes() []string {
	z := c.sizing()
	if !z.RaiseMax() {
		return nil
	}
	cur := "an unknown limit"
	if z.CurrentMax > 0 {
		cur = fmt.Sprintf("%d", z.CurrentMax)
	}
	notes := []string{fmt.Sprintf("# raise the limit from %s to %d entries: %s; %s", cur, z.Max, z.MaxReason, z.memoryNote())}
	if n := c.bucketsNote(); n != "" {
		notes = append(notes, n)
	}
	return notes
}

// bucketsNote says in a comment line why the hash gets the proposed
// number of buckets and what they cost (the planner's step title then
// gives the number), or "" when the proposal keeps the hash size.
func (c *ruleContext) bucketsNote() string {
	z := c.sizing()
	if !z.RaiseBuckets() {
		return ""
	}
	note := "# give the hash table one bucket per entry"
	if z.RaiseMax() {
		note += fmt.Sprintf(" of the new limit %d", z.Max)
	}
	if z.CurrentBuckets > 0 {
		note += fmt.Sprintf(": %s more kernel memory", HumanBytes((roundUp(z.Buckets, 512)-roundUp(z.CurrentBuckets, 512))*8))
	}
	return note
}

// sizingChanges returns the proposal as data (Finding.Changes) for a
// finding that sets the limit (withMax) and the hash size: the values its
// notes (limitNotes, bucketsNote) speak of, for the planner.
func (c *ruleContext) sizingChanges(withMax bool) []Change {
	z := c.sizing()
	var ch []Change
	if withMax && z.RaiseMax() {
		ch = append(ch, Change{Kind: ChangeSysctl, Setting: "max", Key: c.sysctlKey("max"), Current: z.CurrentMax,
			Proposed: z.Max, Scope: "global", Reason: z.MaxReason, CostBytes: z.MemoryAtMaxBytes})
	}
	// As in the notes: limitNotes gives the buckets only with the limit.
	if z.RaiseBuckets() && (!withMax || z.RaiseMax()) {
		mod := "nf_conntrack"
		if c.snap.Settings.Legacy {
			mod = "ip_conntrack"
		}
		var cost int64
		if z.CurrentBuckets > 0 {
			cost = (roundUp(z.Buckets, 512) - roundUp(z.CurrentBuckets, 512)) * 8
		}
		ch = append(ch, Change{Kind: ChangeModuleParam, Setting: "hashsize", Key: "/sys/module/" + mod + "/parameters/hashsize",
			Current: z.CurrentBuckets, Proposed: z.Buckets, Scope: "global", Reason: z.BucketsReason, CostBytes: cost})
	}
	return ch
}
