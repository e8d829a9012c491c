package conntrack

// StatField names one conntrack statistics counter.
type StatField uint8

// Statistics counters. The names are those `conntrack -S` prints; the
// /proc/net/stat/nf_conntrack header spells some differently (see
// [StatFieldByHeader]).
const (
	StatEntries StatField = iota
	StatFound
	StatInvalid
	StatInsert
	StatInsertFailed
	StatDrop
	StatEarlyDrop
	StatError // "icmp_error" in the procfs header
	StatSearchRestart
	StatClashResolve // "clashres" in the procfs header
	StatChainTooLong // "chainlength" in the procfs header
	StatNew
	StatIgnore
	StatDelete
	StatDeleteList
	StatSearched
	StatExpectNew
	StatExpectCreate
	StatExpectDelete
	// NumStatFields is the number of counters.
	NumStatFields
)

var statNames = [NumStatFields]string{"entries", "found", "invalid", "insert", "insert_failed",
	"drop", "early_drop", "error", "search_restart", "clash_resolve", "chaintoolong", "new",
	"ignore", "delete", "delete_list", "searched", "expect_new", "expect_create", "expect_delete"}

// String returns the counter's `conntrack -S` name.
func (s StatField) String() string {
	if s < NumStatFields {
		return statNames[s]
	}
	return "unknown"
}

// StatFieldByHeader maps a /proc/net/stat/nf_conntrack header column or a
// `conntrack -S` key to its counter.
func StatFieldByHeader(name string) (StatField, bool) {
	switch name {
	case "clashres":
		return StatClashResolve, true
	case "chainlength":
		return StatChainTooLong, true
	case "icmp_error":
		return StatError, true
	}
	for i, n := range statNames {
		if n == name {
			return StatField(i), true
		}
	}
	return 0, false
}

// Stats holds conntrack counters, of one CPU or summed over all. Present
// says which counters the source provided (old kernels lack some).
type Stats struct {
	Values  [NumStatFields]uint64
	Present uint32 // bit i set: Values[i] was read
}

// Get returns a counter's value and whether it was read.
func (s *Stats) Get(f StatField) (uint64, bool) {
	return s.Values[f], s.Present&(1<<f) != 0
}

// Set stores a counter's value and marks it present.
func (s *Stats) Set(f StatField, v uint64) {
	s.Values[f] = v
	s.Present |= 1 << f
}

// Has reports whether the counter was read.
func (s *Stats) Has(f StatField) bool { return s.Present&(1<<f) != 0 }

// SumStats adds per-CPU counters. "entries" is the namespace's count,
// repeated on every CPU, so it is taken from the first CPU, not summed.
func SumStats(perCPU []Stats) Stats {
	var t Stats
	for i, c := range perCPU {
		t.Present |= c.Present
		for f := range NumStatFields {
			if f == StatEntries {
				if i == 0 {
					t.Values[f] = c.Values[f]
				}
				continue
			}
			t.Values[f] += c.Values[f]
		}
	}
	return t
}
