package exporter

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/internal/flowgen"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// TestBenchScrapeLatency250k measures scrape latency against a namespace
// holding 250,000 entries while background listings of that table run
// back to back, beside a bare read of nf_conntrack_count, and then 50
// concurrent scrapers. It is a benchmark (minutes, a large table), so it
// runs only with CTDOCTOR_BENCH_EXPORTER=1:
//
//	sudo CTDOCTOR_BENCH_EXPORTER=1 go test -run TestBenchScrapeLatency250k -v -timeout 20m ./exporter
//
// Optional: CTDOCTOR_BENCH_ENTRIES (default 250000), CTDOCTOR_BENCH_SECONDS
// for the concurrent phase (default 60).
func TestBenchScrapeLatency250k(t *testing.T) {
	if os.Getenv("CTDOCTOR_BENCH_EXPORTER") != "1" {
		t.Skip("skipped: a benchmark; set CTDOCTOR_BENCH_EXPORTER=1 to run it")
	}
	entries := envInt("CTDOCTOR_BENCH_ENTRIES", 250000)
	seconds := envInt("CTDOCTOR_BENCH_SECONDS", 60)
	n := nstest.New(t, "conntrack", "nft")
	n.Track()
	flows := filepath.Join(t.TempDir(), "flows.txt")
	if err := flowgen.WriteFile(flows, entries, 1); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	n.LoadFlows(flows)
	t.Logf("loaded %s entries in %s", strings.TrimSpace(n.Run("conntrack", "-C")), time.Since(t0).Round(time.Second))

	// The bare read: a thread already inside the namespace reads the count file.
	var bare []time.Duration
	if err := n.Do(func() error {
		for i := 0; i < 2000; i++ {
			s := time.Now()
			if _, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count"); err != nil {
				return err
			}
			bare = append(bare, time.Since(s))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Between listings (the default 30s interval, after the first one).
	quiet, err := New(Options{NetNS: []string{n.Name}})
	if err != nil {
		t.Fatal(err)
	}
	quietURL := serve(t, quiet)
	waitListed(t, quietURL, n.Name)
	quietCollect, quietHTTP := measure(t, quiet, quietURL)

	// The worst case: background listings running back to back (1s
	// interval; each one takes longer than that at this size), so every
	// scrape competes with a listing for the two cores.
	e, err := New(Options{NetNS: []string{n.Name}, BreakdownInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, e)
	waitListed(t, url, n.Name)
	collect, httpScrape := measure(t, e, url)
	mfs := scrape(t, url)
	listed := mustValue(t, mfs, "ctdoctor_conntrack_listed_entries", "netns="+n.Name)
	took := mustValue(t, mfs, "ctdoctor_exporter_breakdown_duration_seconds", "netns="+n.Name)

	// 50 concurrent scrapers.
	var mu sync.Mutex
	var conc []time.Duration
	failed := 0
	var wg sync.WaitGroup
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	for w := 0; w < 50; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 10 * time.Second}
			for time.Now().Before(end) {
				s := time.Now()
				resp, err := c.Get(url + "/metrics")
				ok := err == nil && resp.StatusCode == 200
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				d := time.Since(s)
				mu.Lock()
				if ok {
					conc = append(conc, d)
				} else {
					failed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	rss := rssKiB()
	t.Logf("table: %.0f entries listed in the background, each listing %.2fs (listings back to back)", listed, took)
	t.Logf("%-52s %10s %10s %10s", "what", "p50", "p99", "max")
	t.Logf("%-52s %10s %10s %10s", "bare read of nf_conntrack_count (thread in the ns)", pct(bare, 50), pct(bare, 99), pct(bare, 100))
	t.Logf("%-52s %10s %10s %10s", "exporter collection, between listings", pct(quietCollect, 50), pct(quietCollect, 99), pct(quietCollect, 100))
	t.Logf("%-52s %10s %10s %10s", "GET /metrics, one scraper, between listings", pct(quietHTTP, 50), pct(quietHTTP, 99), pct(quietHTTP, 100))
	t.Logf("%-52s %10s %10s %10s", "exporter collection, listings back to back", pct(collect, 50), pct(collect, 99), pct(collect, 100))
	t.Logf("%-52s %10s %10s %10s", "GET /metrics, one scraper, listings back to back", pct(httpScrape, 50), pct(httpScrape, 99), pct(httpScrape, 100))
	t.Logf("%-52s %10s %10s %10s", fmt.Sprintf("GET /metrics, 50 scrapers for %ds (%d scrapes)", seconds, len(conc)), pct(conc, 50), pct(conc, 99), pct(conc, 100))
	t.Logf("failed scrapes: %d; collections: %d; test process VmHWM (peak RSS) %d KiB", failed, e.collections.Load(), rss)
	if failed > 0 {
		t.Errorf("%d scrapes failed", failed)
	}
}

// waitListed waits for the first background listing's result.
func waitListed(t *testing.T, url, netns string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, ok := value(scrape(t, url), "ctdoctor_conntrack_listed_entries", "netns="+netns); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no background listing within 60s")
		}
	}
}

// measure times 2000 in-process collections and 1000 GET /metrics.
func measure(t *testing.T, e *Exporter, url string) (collect, get []time.Duration) {
	t.Helper()
	for i := 0; i < 2000; i++ {
		s := time.Now()
		e.collectShared()
		collect = append(collect, time.Since(s))
	}
	client := &http.Client{}
	for i := 0; i < 1000; i++ {
		s := time.Now()
		resp, err := client.Get(url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		get = append(get, time.Since(s))
	}
	return collect, get
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	if i < 1 {
		i = 1
	}
	return s[i-1]
}

func pct(d []time.Duration, p int) string {
	return percentile(d, p).Round(time.Microsecond).String()
}

// rssKiB is this process's peak resident set (VmHWM).
func rssKiB() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return -1
}
