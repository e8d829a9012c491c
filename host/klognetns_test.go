package host

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// reuseLog is a /dev/kmsg excerpt (microseconds since boot) in which
// inode 4026532177 is logged by two namespaces: one that filled its table
// at 100-120 s and was deleted, and "demo", created at 200 s with the
// same number, which filled its own at 300-309 s. Inode 4026532400
// ("web") and the initial namespace (no "in netns") log too.
func reuseLog(demoEvents int) string {
	var b strings.Builder
	seq := 1000
	add := func(usec int64, msg string) {
		fmt.Fprintf(&b, "4,%d,%d,-;%s\n", seq, usec, msg)
		seq++
	}
	for i := range 21 {
		add(int64(100+i)*1e6, "nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet")
	}
	add(150e6, "nf_conntrack: nf_conntrack: table full in netns 4026532400, dropping packet")
	add(150e6+1, "nf_conntrack: nf_conntrack: table full, dropping packet")
	for i := range demoEvents {
		add(int64(300+i)*1e6, "nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet")
	}
	add(400e6, "nf_conntrack: nf_conntrack: table full in netns 4026532400, dropping packet")
	return b.String()
}

var reuseBoot = time.Date(2026, 11, 21, 5, 0, 0, 0, time.UTC)

// reuseList is the namespaces that exist now.
func reuseList() []NetNS {
	return []NetNS{
		{Name: "demo", Path: "/run/netns/demo", Inode: 4026532177, Created: reuseBoot.Add(200 * time.Second)},
		{Name: "web", Path: "/run/netns/web", Inode: 4026532400, Created: reuseBoot.Add(10 * time.Second)},
		{Name: "init", Inode: 4026531840, Init: true},
	}
}

func byKey(s LogSummary) map[string]NetNSCount {
	m := map[string]NetNSCount{}
	for _, n := range s.ByNetNS {
		m[fmt.Sprintf("%d/%v", n.Inode, n.Gone)] = n
	}
	return m
}

// TestKernelLogReusedInode: the events of a namespace that is gone stay
// its own — with Gone and ReusedBy, not under the name of the namespace
// that has its inode number now — before and after the new namespace logs
// events of its own; the new namespace's count, first and last cover its
// events only, and EventsOf (what the table-full rule counts) gives demo
// its 10 events, not 31.
func TestKernelLogReusedInode(t *testing.T) {
	at := func(s int) time.Time { return reuseBoot.Add(time.Duration(s) * time.Second) }

	// Before demo logged anything: all 21 events are the gone namespace's.
	s, err := ParseKernelLogNetNS(strings.NewReader(reuseLog(0)), reuseBoot, 2026, reuseList())
	if err != nil {
		t.Fatal(err)
	}
	m := byKey(s)
	if g := m["4026532177/true"]; g.Count != 21 || g.Name != "" || g.ReusedBy != "demo" || !g.First.Equal(at(100)) || !g.Last.Equal(at(120)) {
		t.Errorf("gone namespace: %+v, want 21 events 100-120 s, no name, reused by demo", g)
	}
	if d, ok := m["4026532177/false"]; ok {
		t.Errorf("demo has events before it logged any: %+v", d)
	}
	if e := s.EventsOf(reuseList()[0]); e.Own != 0 || e.Before != 21 || e.Unnamed != 0 {
		t.Errorf("demo's events before it logged any: %+v", e)
	}

	// After 10 drops of demo's own.
	s, err = ParseKernelLogNetNS(strings.NewReader(reuseLog(10)), reuseBoot, 2026, reuseList())
	if err != nil {
		t.Fatal(err)
	}
	m = byKey(s)
	if g := m["4026532177/true"]; g.Count != 21 || g.ReusedBy != "demo" || g.Label() != "gone; number since reused by demo" || !g.Last.Equal(at(120)) {
		t.Errorf("gone namespace after demo's drops: %+v", g)
	}
	if d := m["4026532177/false"]; d.Count != 10 || d.Name != "demo" || d.Gone || !d.First.Equal(at(300)) || !d.Last.Equal(at(309)) || d.Label() != "demo" {
		t.Errorf("demo: %+v, want 10 events 300-309 s", d)
	}
	if w := m["4026532400/false"]; w.Count != 2 || w.Name != "web" {
		t.Errorf("web: %+v", w)
	}
	if len(s.ByNetNS) != 3 || s.TableFullEvents != 21+10+2+1 || s.NoNetNS != 1 || !s.NoNetNSLast.Equal(at(150).Add(time.Microsecond)) {
		t.Errorf("summary: %d entries, %d events, %d without netns at %v", len(s.ByNetNS), s.TableFullEvents, s.NoNetNS, s.NoNetNSLast)
	}
	e := s.EventsOf(reuseList()[0])
	if e.Own != 10 || e.Before != 21 || e.Unnamed != 0 || e.Other != 3 || !e.First.Equal(at(300)) || !e.Last.Equal(at(309)) {
		t.Errorf("demo's events: %+v, want 10 own (300-309 s), 21 before, 3 other", e)
	}
	// The initial namespace: this kernel names the others, so the one
	// unnamed event is init's.
	if e := s.EventsOf(reuseList()[2]); e.Own != 1 || e.Other != 33 || !e.Last.Equal(at(150).Add(time.Microsecond)) {
		t.Errorf("init's events: %+v", e)
	}

	// JSON: the name is a name; the state has fields of its own.
	js, err := json.Marshal(s.ByNetNS)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`{"inode":4026532177,"count":21,"first":"2026-11-21T05:01:40Z","last":"2026-11-21T05:02:00Z","gone":true,"reused_by":"demo"}`,
		`{"inode":4026532177,"name":"demo","count":10,"first":"2026-11-21T05:05:00Z","last":"2026-11-21T05:05:09Z"}`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("JSON %s\nlacks %s", js, want)
		}
	}
	if strings.Contains(string(js), `"name":"gone`) {
		t.Errorf("prose in a name: %s", js)
	}

	// No namespace list (a fake root): nothing is named or split.
	s, _ = ParseKernelLog(strings.NewReader(reuseLog(10)), reuseBoot, 2026)
	if m := byKey(s); m["4026532177/false"].Count != 31 || m["4026532177/false"].Name != "" {
		t.Errorf("without a namespace list: %+v", s.ByNetNS)
	}
}

// TestEventsOfUnsplitSummary: summaries that were not split (older
// snapshots) still keep a predecessor's events from a namespace created
// after all of them; an old kernel's unnamed events may be anyone's.
func TestEventsOfUnsplitSummary(t *testing.T) {
	demo := reuseList()[0]
	s := LogSummary{TableFullEvents: 21, Last: reuseBoot.Add(120 * time.Second),
		ByNetNS: []NetNSCount{{Inode: demo.Inode, Count: 21, First: reuseBoot.Add(100 * time.Second), Last: reuseBoot.Add(120 * time.Second)}}}
	if e := s.EventsOf(demo); e.Own != 0 || e.Before != 21 {
		t.Errorf("unsplit, all before creation: %+v", e)
	}
	old := LogSummary{TableFullEvents: 5, First: reuseBoot, Last: reuseBoot.Add(time.Minute)}
	if e := old.EventsOf(demo); e.Unnamed != 5 || e.Own != 0 || !e.Last.Equal(reuseBoot.Add(time.Minute)) {
		t.Errorf("old kernel: %+v", e)
	}
}
