package exporter

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// serve starts e's background work and an HTTP server for it; both end
// with the test.
func serve(t *testing.T, e *Exporter) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e.Start(ctx)
	h, err := e.Handler(HandlerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		cancel()
		e.Wait()
	})
	return srv.URL
}

// scrape is one GET /metrics, parsed.
func scrape(t testing.TB, url string) map[string]*dto.MetricFamily {
	t.Helper()
	body := scrapeText(t, url)
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return mfs
}

func scrapeText(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, b)
	}
	return string(b)
}

// value finds the sample of name whose labels include want ("k=v" pairs).
func value(mfs map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
outer:
	for _, m := range mf.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue outer
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

func mustValue(t testing.TB, mfs map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	v, ok := value(mfs, name, want...)
	if !ok {
		t.Fatalf("no %s{%s} in the scrape", name, strings.Join(want, ","))
	}
	return v
}

// conntrackC is `conntrack -C` in the namespace.
func conntrackC(t testing.TB, n *nstest.NS) int64 {
	t.Helper()
	out := strings.TrimSpace(n.Run("conntrack", "-C"))
	v, err := strconv.ParseInt(out, 10, 64)
	if err != nil {
		t.Fatalf("conntrack -C: %q", out)
	}
	return v
}

// conntrackS is `conntrack -S` in the namespace, summed over CPUs.
func conntrackS(t testing.TB, n *nstest.NS) conntrack.Stats {
	t.Helper()
	per, err := host.ParseConntrackS(strings.NewReader(n.Run("conntrack", "-S")))
	if err != nil {
		t.Fatalf("conntrack -S: %v", err)
	}
	return conntrack.SumStats(per)
}

// connLoad opens and closes TCP connections on the namespace's loopback,
// one after another, until stop is closed; every one leaves a TIME_WAIT
// entry (120 s), so the count only grows while it runs. It returns the
// number of connections made.
func connLoad(t testing.TB, n *nstest.NS, stop <-chan struct{}) <-chan int {
	done := make(chan int, 1)
	var ln net.Listener
	if err := n.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	go func() {
		made := 0
		err := n.Do(func() error {
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
				if err != nil {
					return err
				}
				// Wait for the server's close, then close: the client ends in TIME_WAIT.
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				io.Copy(io.Discard, c)
				c.Close()
				made++
			}
		})
		ln.Close()
		wg.Wait()
		if err != nil {
			t.Errorf("load: %v", err)
		}
		done <- made
	}()
	return done
}
