package analyze

import "slices"

// FindingSpec describes one finding the rules can report: its stable id
// (an alert-routing key), every severity it can be reported with, least
// severe first, and a one-line title.
type FindingSpec struct {
	ID         string   `json:"id"`
	Severities []string `json:"severities"`
	Title      string   `json:"title"`
}

// catalogue lists every finding id the rules emit, in the order the rules
// run. TestCatalogue keeps it in sync with the rules' source and with what
// the fixture hosts produce.
var catalogue = []FindingSpec{
	{"table-full", []string{Warning, Critical}, "the table is or was full: new connections are dropped"},
	{"table-near-full", []string{Warning, Critical}, "the table is close to its limit (75% warning, 90% critical)"},
	{"netns-near-full", []string{Warning, Critical}, "a network namespace is close to the global limit"},
	{"insert-failed-races", []string{Info, Warning}, "insert_failed or clash_resolve: confirm-time races (SNAT, DNS), not a full table"},
	{"chain-too-long", []string{Warning}, "inserts refused for a too-long hash chain (hash pressure or a collision attack)"},
	{"hash-chains-long", []string{Info, Warning}, "the average hash chain is long: too few buckets for the entries"},
	{"max-buckets-ratio", []string{Info, Warning}, "the limit is larger than the hash table: chains grow long when the table fills"},
	{"unreplied-flood", []string{Info, Warning}, "many entries without a reply: SYN or UDP floods, unreachable peers"},
	{"timewait-dominant", []string{Info, Warning}, "TIME_WAIT entries dominate: short connections without keepalive"},
	{"local-ports-exhausted", []string{Warning}, "a client is close to running out of local ports towards one destination"},
	{"loopback-tracked", []string{Info, Warning}, "loopback connections are tracked that need no tracking"},
	{"busy-port-tracked", []string{Info, Warning}, "one service holds a large share of the entries"},
	{"established-timeout-long", []string{Info, Warning}, "ESTABLISHED entries outlive dead peers (timeout longer than TCP keepalive)"},
	{"legacy-ip-conntrack", []string{Warning}, "an old ip_conntrack kernel: the settings have other names"},
	{"kube-proxy-manages", []string{Info}, "kube-proxy manages the conntrack settings and rewrites them at every start"},
	{"stats-unavailable", []string{Info}, "the per-CPU counters cannot be read (no procfs file, no netlink access)"},
}

// Catalogue returns every finding the rules can report, in the order the
// rules run. The slice is a copy: changing it changes nothing here.
func Catalogue() []FindingSpec {
	out := make([]FindingSpec, len(catalogue))
	for i, s := range catalogue {
		s.Severities = slices.Clone(s.Severities)
		out[i] = s
	}
	return out
}

// LookupFinding returns the catalogue entry of a finding id.
func LookupFinding(id string) (FindingSpec, bool) {
	for _, s := range catalogue {
		if s.ID == id {
			s.Severities = slices.Clone(s.Severities)
			return s, true
		}
	}
	return FindingSpec{}, false
}
