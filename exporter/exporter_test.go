package exporter

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/internal/flowgen"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// Bad options are refused with ErrOptions.
func TestNewRefusesBadOptions(t *testing.T) {
	for _, o := range []Options{
		{TopServices: -1},
		{TopServices: MaxTopServices + 1},
		{BreakdownInterval: 10 * time.Millisecond},
		{MaxNetNS: -1},
		{NetNS: []string{""}},
		{NetNS: []string{"a/b"}},
	} {
		if _, err := New(o); !errors.Is(err, ErrOptions) {
			t.Errorf("New(%+v) = %v, want ErrOptions", o, err)
		}
	}
}

// Scrapes that arrive while a collection runs wait for it and get its
// metrics: N concurrent scrapes cost one read.
func TestConcurrentScrapesShareOneCollection(t *testing.T) {
	e, err := New(Options{BreakdownInterval: -1, NoKernelLog: true})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	joined := make(chan struct{}, n)
	e.joinHook = func() { joined <- struct{}{} }
	e.beforeRead = func() {
		// Hold the first collection until every other scrape has joined it.
		for i := 0; i < n-1; i++ {
			select {
			case <-joined:
			case <-time.After(10 * time.Second):
				t.Errorf("only %d scrapes joined the collection in flight", i)
				return
			}
		}
	}
	var wg sync.WaitGroup
	results := make([][]prometheus.Metric, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = e.collectShared()
		}()
	}
	wg.Wait()
	if got := e.collections.Load(); got != 1 {
		t.Errorf("%d concurrent scrapes made %d collections, want 1", n, got)
	}
	for i := 1; i < n; i++ {
		if len(results[i]) == 0 || &results[i][0] != &results[0][0] {
			t.Fatalf("scrape %d did not get the shared result", i)
		}
	}
	// A scrape after it starts a new one.
	e.beforeRead = nil
	e.collectShared()
	if got := e.collections.Load(); got != 2 {
		t.Errorf("a later scrape made %d collections in all, want 2", got)
	}
}

// The scraped metrics follow `conntrack -C` and `conntrack -S` in a
// namespace under load (bracketed by the two taken before and after the
// scrape, as the count only grows), and equal them once the load stops;
// the breakdown then equals `conntrack -L` aggregated.
func TestMetricsFollowConntrackUnderLoad(t *testing.T) {
	n := nstest.New(t, "conntrack", "nft")
	n.Track()
	flows := filepath.Join(t.TempDir(), "flows.txt")
	if err := flowgen.WriteFile(flows, 5000, 1); err != nil {
		t.Fatal(err)
	}
	n.LoadFlows(flows)
	e, err := New(Options{NetNS: []string{n.Name}, BreakdownInterval: time.Second, NoKernelLog: true})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, e)
	stop := make(chan struct{})
	made := connLoad(t, n, stop)
	label := "netns=" + n.Name
	for i := 0; i < 5; i++ {
		time.Sleep(200 * time.Millisecond)
		c1, s1 := conntrackC(t, n), conntrackS(t, n)
		mfs := scrape(t, url)
		c2, s2 := conntrackC(t, n), conntrackS(t, n)
		got := int64(mustValue(t, mfs, "ctdoctor_conntrack_entries", label))
		if got < c1 || got > c2 {
			t.Errorf("under load: entries %d, conntrack -C %d before and %d after", got, c1, c2)
		}
		checkStats(t, mfs, label, s1, s2)
	}
	close(stop)
	if m := <-made; m < 50 {
		t.Fatalf("the load made only %d connections", m)
	}
	c, s := conntrackC(t, n), conntrackS(t, n)
	mfs := scrape(t, url)
	if got := int64(mustValue(t, mfs, "ctdoctor_conntrack_entries", label)); got != c {
		t.Errorf("at rest: entries %d, conntrack -C %d", got, c)
	}
	checkStats(t, mfs, label, s, s)
	max := mustValue(t, mfs, "ctdoctor_conntrack_entries_limit", label)
	if u := mustValue(t, mfs, "ctdoctor_conntrack_usage_ratio", label); u != float64(c)/max {
		t.Errorf("usage %v, want %d/%v", u, c, max)
	}
	if v := mustValue(t, mfs, "ctdoctor_exporter_up", "collector=table", label); v != 1 {
		t.Errorf("table up = %v", v)
	}

	// Wait for a background listing that started after the load stopped.
	after := float64(time.Now().UnixNano()) / 1e9
	deadline := time.Now().Add(20 * time.Second)
	for {
		mfs = scrape(t, url)
		if ts, ok := value(mfs, "ctdoctor_exporter_breakdown_timestamp_seconds", label); ok && ts > after+1.5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no background listing after the load stopped")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Every metric, the cached ones included, is described and consistent.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e)
	if _, err := reg.Gather(); err != nil {
		t.Errorf("pedantic gather: %v", err)
	}
	states, protos, services, listed := conntrackL(t, n)
	if got := int64(mustValue(t, mfs, "ctdoctor_conntrack_listed_entries", label)); got != listed {
		t.Errorf("listed %d, conntrack -L lists %d", got, listed)
	}
	for s := conntrack.TCPState(0); s < conntrack.TCPStateCount; s++ {
		got := int64(mustValue(t, mfs, "ctdoctor_conntrack_tcp_state_entries", label, "state="+s.String()))
		if got != states[s.String()] {
			t.Errorf("TCP state %s: %d, conntrack -L has %d", s, got, states[s.String()])
		}
	}
	for p, want := range protos {
		if got := int64(mustValue(t, mfs, "ctdoctor_conntrack_protocol_entries", label, "protocol="+p)); got != want {
			t.Errorf("protocol %s: %d, conntrack -L has %d", p, got, want)
		}
	}
	// The services add up to the listed entries.
	var sum float64
	for _, m := range mfs["ctdoctor_conntrack_service_entries"].Metric {
		sum += m.Gauge.GetValue()
	}
	if int64(sum) != listed {
		t.Errorf("services add up to %v, listed %d", sum, listed)
	}
	// Each service's value is its count in conntrack -L; there are
	// min(K, services) of them and "other".
	for _, m := range mfs["ctdoctor_conntrack_service_entries"].Metric {
		svc := m.Label[len(m.Label)-1].GetValue()
		for _, l := range m.Label {
			if l.GetName() == "service" {
				svc = l.GetValue()
			}
		}
		if svc != "other" && int64(m.Gauge.GetValue()) != services[svc] {
			t.Errorf("service %s: %v, conntrack -L has %d", svc, m.Gauge.GetValue(), services[svc])
		}
	}
	if k, want := len(mfs["ctdoctor_conntrack_service_entries"].Metric), min(DefaultTopServices, len(services))+1; k != want {
		t.Errorf("%d service series, want %d (top %d of %d services and other)", k, want, DefaultTopServices, len(services))
	}
	// Every finding id and severity is present.
	want := 0
	for _, s := range analyze.Catalogue() {
		want += len(s.Severities)
		for _, sev := range s.Severities {
			mustValue(t, mfs, "ctdoctor_finding_active", label, "id="+s.ID, "severity="+sev)
		}
	}
	if got := len(mfs["ctdoctor_finding_active"].Metric); got != want {
		t.Errorf("%d finding series, want %d", got, want)
	}
}

// checkStats checks every counter `conntrack -S` shows against the bounds.
func checkStats(t *testing.T, mfs map[string]*dto.MetricFamily, label string, lo, hi conntrack.Stats) {
	t.Helper()
	checked := 0
	for f := conntrack.StatField(0); f < conntrack.NumStatFields; f++ {
		if f == conntrack.StatEntries || !lo.Has(f) {
			continue
		}
		name := "ctdoctor_conntrack_stat_" + f.String() + "_total"
		got := uint64(mustValue(t, mfs, name, label))
		if got < lo.Values[f] || got > hi.Values[f] {
			t.Errorf("%s = %d, conntrack -S %d before and %d after", name, got, lo.Values[f], hi.Values[f])
		}
		checked++
	}
	if checked < 8 {
		t.Errorf("only %d counters compared", checked)
	}
}

// conntrackL aggregates `conntrack -L` as the usual awk pipelines do: by TCP
// state and by protocol.
func conntrackL(t *testing.T, n *nstest.NS) (states, protos, services map[string]int64, total int64) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", n.Name, "conntrack", "-L").Output()
	if err != nil {
		t.Fatalf("conntrack -L: %v", err)
	}
	states, protos, services = map[string]int64{}, map[string]int64{}, map[string]int64{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		total++
		protos[f[0]]++
		if f[0] == "tcp" {
			states[f[3]]++
		}
		for _, kv := range f {
			if port, ok := strings.CutPrefix(kv, "dport="); ok {
				services[f[0]+"/"+port]++
				break
			}
		}
	}
	return states, protos, services, total
}

// A scrape never waits for the background listing: while one runs (each
// takes over a second, for the second counter sample), scrapes still
// answer at once.
func TestScrapeDoesNotWaitForTheListing(t *testing.T) {
	n := nstest.New(t, "conntrack", "nft")
	n.Track()
	flows := filepath.Join(t.TempDir(), "flows.txt")
	if err := flowgen.WriteFile(flows, 20000, 2); err != nil {
		t.Fatal(err)
	}
	n.LoadFlows(flows)
	e, err := New(Options{NetNS: []string{n.Name}, BreakdownInterval: time.Second, NoKernelLog: true})
	if err != nil {
		t.Fatal(err)
	}
	// The background breakdown is held inside its run (the hook blocks it)
	// until the test lets go: scrapes must answer all the same. The wait
	// below only guards against a deadlock; it measures nothing.
	entered, hold := make(chan struct{}), make(chan struct{})
	var once, release sync.Once
	e.listingHook = func() { once.Do(func() { close(entered); <-hold }) }
	let := func() { release.Do(func() { close(hold) }) }
	url := serve(t, e)
	t.Cleanup(let) // runs before serve's cleanup, which waits for the held run
	<-entered
	for i := range 5 {
		done := make(chan error, 1)
		go func() {
			resp, err := http.Get(url + "/metrics")
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("HTTP %s", resp.Status)
				}
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("scrape %d during the held listing: %v", i+1, err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("scrape %d waited for the background listing (held by the test)", i+1)
		}
	}
	let()
	// Once let go the breakdown runs and a later scrape carries it.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if v, ok := value(scrape(t, url), "ctdoctor_exporter_breakdown_duration_seconds", "netns="+n.Name); ok && v > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no breakdown after the listing was let go")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A namespace that is deleted is _up 0 and the others keep working; one
// given by name that comes back is read again.
func TestDeletedNamespaceIsUpZero(t *testing.T) {
	a := nstest.New(t, "nft")
	a.Track()
	nstest.Require(t)
	gone := "ctdtest-gone-" + a.Name[len("ctdtest-"):]
	if out, err := exec.Command("ip", "netns", "add", gone).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", gone).Run() })
	e, err := New(Options{NetNS: []string{a.Name, gone}, BreakdownInterval: -1, NoKernelLog: true})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, e)
	mfs := scrape(t, url)
	for _, ns := range []string{a.Name, gone} {
		if v := mustValue(t, mfs, "ctdoctor_exporter_up", "collector=table", "netns="+ns); v != 1 {
			t.Errorf("%s: up %v before the delete", ns, v)
		}
	}
	if out, err := exec.Command("ip", "netns", "del", gone).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	mfs = scrape(t, url)
	if v := mustValue(t, mfs, "ctdoctor_exporter_up", "collector=table", "netns="+gone); v != 0 {
		t.Errorf("deleted namespace: up %v, want 0", v)
	}
	if _, ok := value(mfs, "ctdoctor_conntrack_entries", "netns="+gone); ok {
		t.Error("deleted namespace still has an entries value")
	}
	if v := mustValue(t, mfs, "ctdoctor_exporter_up", "collector=table", "netns="+a.Name); v != 1 {
		t.Errorf("the other namespace: up %v, want 1", v)
	}
	mustValue(t, mfs, "ctdoctor_conntrack_entries", "netns="+a.Name)
}

// With AllNetNS, namespaces are found again as they come and go: one
// created after the start gets its series, and loses them once deleted.
func TestAllNetNSDiscovery(t *testing.T) {
	nstest.Require(t, "nft")
	e, err := New(Options{AllNetNS: true, DiscoveryInterval: 200 * time.Millisecond, BreakdownInterval: -1, NoKernelLog: true})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, e)
	if _, ok := value(scrape(t, url), "ctdoctor_exporter_up", "collector=table", "netns=init"); !ok {
		t.Error("the initial namespace is not watched")
	}
	n := nstest.New(t, "nft")
	n.Track()
	waitFor := func(present bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			// Once gone, discovery drops the namespace: not even up 0 is left.
			name := "ctdoctor_conntrack_entries"
			if !present {
				name = "ctdoctor_exporter_up"
			}
			_, ok := value(scrape(t, url), name, "netns="+n.Name)
			if ok == present {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("namespace %s: present %v after 10s, want %v", n.Name, ok, present)
			}
		}
	}
	waitFor(true)
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	waitFor(false)
	// nstest's cleanup deletes it again: recreate the name so that it can.
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
}

// With PerCPU every counter is also exported per CPU: one series per line
// of /proc/net/stat/nf_conntrack, adding up to the summed counter.
func TestPerCPUCounters(t *testing.T) {
	n := nstest.New(t, "nft", "ping")
	n.Track()
	n.Run("ping", "-c", "3", "-i", "0.2", "127.0.0.1")
	e, err := New(Options{NetNS: []string{n.Name}, PerCPU: true, BreakdownInterval: -1, NoKernelLog: true})
	if err != nil {
		t.Fatal(err)
	}
	mfs := scrape(t, serve(t, e))
	lines := strings.Split(strings.TrimSpace(n.Run("cat", "/proc/net/stat/nf_conntrack")), "\n")
	cpus := len(lines) - 1
	for _, name := range []string{"insert", "found", "invalid", "drop", "search_restart"} {
		mf := mfs["ctdoctor_conntrack_cpu_stat_"+name+"_total"]
		if mf == nil || len(mf.Metric) != cpus {
			t.Errorf("%s: %v per-CPU series, want %d", name, mf, cpus)
			continue
		}
		var sum float64
		for _, m := range mf.Metric {
			sum += m.Counter.GetValue()
		}
		if total := mustValue(t, mfs, "ctdoctor_conntrack_stat_"+name+"_total", "netns="+n.Name); sum != total {
			t.Errorf("%s: per-CPU series add up to %v, the total is %v", name, sum, total)
		}
	}
	// Off by default.
	e2, _ := New(Options{NetNS: []string{n.Name}, BreakdownInterval: -1, NoKernelLog: true})
	if _, ok := scrape(t, serve(t, e2))["ctdoctor_conntrack_cpu_stat_drop_total"]; ok {
		t.Error("per-CPU series without PerCPU")
	}
}

// Where /proc/net/stat/nf_conntrack is absent the counters come over
// ctnetlink: the same numbers, for the same namespace, as the procfs file
// (read here, where it exists).
func TestNetlinkCountersMatchProcfs(t *testing.T) {
	n := nstest.New(t, "nft", "ping")
	n.Track()
	n.Run("ping", "-c", "3", "-i", "0.2", "127.0.0.1")
	r, err := readTable(n.Path())
	if err != nil || r.statsSource != "proc" {
		t.Fatalf("readTable: %v, source %q", err, r.statsSource)
	}
	per, err := netlinkStats(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	nl := conntrack.SumStats(per)
	compared := 0
	for f := conntrack.StatField(1); f < conntrack.NumStatFields; f++ {
		if !nl.Has(f) || !r.stats.Has(f) {
			continue
		}
		if nl.Values[f] != r.stats.Values[f] {
			t.Errorf("%s: netlink %d, procfs %d", f, nl.Values[f], r.stats.Values[f])
		}
		compared++
	}
	if compared < 8 {
		t.Errorf("compared only %d counters", compared)
	}
}

// A namespace given twice, or a name that does not resolve given twice,
// is watched once: duplicate series would fail the scrape.
func TestDuplicateNamespacesWatchedOnce(t *testing.T) {
	n := nstest.New(t, "nft")
	n.Track()
	e, err := New(Options{NetNS: []string{n.Name, n.Name, n.Path(), "ctdtest-missing", "ctdtest-missing"}, BreakdownInterval: -1, NoKernelLog: true})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e)
	if _, err := reg.Gather(); err != nil {
		t.Errorf("gather: %v", err)
	}
	mfs := scrape(t, serve(t, e))
	if got := len(mfs["ctdoctor_conntrack_entries"].Metric); got != 1 {
		t.Errorf("%d entries series for one namespace given three times", got)
	}
	if v := mustValue(t, mfs, "ctdoctor_exporter_up", "collector=table", "netns=ctdtest-missing"); v != 0 {
		t.Errorf("missing namespace: up %v", v)
	}
	if got := len(mfs["ctdoctor_exporter_up"].Metric); got != 3 {
		t.Errorf("%d up series, want 3 (table and stats of the namespace, table of the missing one)", got)
	}
}

// HandlerOptions.MaxRequests (--web.max-requests) answers 503 to the
// requests beyond it while they are all in flight.
func TestMaxRequests(t *testing.T) {
	e, err := New(Options{BreakdownInterval: -1, NoKernelLog: true})
	if err != nil {
		t.Fatal(err)
	}
	entered, hold := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.beforeRead = func() { once.Do(func() { close(entered); <-hold }) }
	h, err := e.Handler(HandlerOptions{MaxRequests: 1})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	first := make(chan int, 1)
	go func() {
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			first <- -1
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-entered
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a second request beyond the limit: HTTP %d, want 503", resp.StatusCode)
	}
	close(hold)
	if code := <-first; code != http.StatusOK {
		t.Errorf("the first request: HTTP %d", code)
	}
}
