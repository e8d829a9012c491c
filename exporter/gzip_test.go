package exporter

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAcceptsGzip(t *testing.T) {
	for _, tc := range []struct {
		h    []string
		want bool
	}{
		{nil, false},
		{[]string{"identity"}, false},
		{[]string{"gzip"}, true},
		{[]string{"deflate, GZIP;q=0.5"}, true},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip; q=0.000"}, false},
		{[]string{"br", "x-gzip"}, true},
		{[]string{"*"}, true},
		{[]string{"gzipx"}, false},
	} {
		if got := acceptsGzip(tc.h); got != tc.want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", tc.h, got, tc.want)
		}
	}
}

// The metrics handler answers gzip to a scraper that asks for it (as
// Prometheus does), plain text to one that does not, and the compressed
// body decodes to the same exposition text.
func TestMetricsGzip(t *testing.T) {
	e, err := New(Options{BreakdownInterval: -1, NoKernelLog: true})
	if err != nil {
		t.Fatal(err)
	}
	h, err := e.Handler(HandlerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	get := func(enc string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/metrics", nil)
		if enc != "" {
			r.Header.Set("Accept-Encoding", enc)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("GET /metrics (Accept-Encoding %q): %d %s", enc, w.Code, w.Body)
		}
		return w
	}
	plain := get("")
	if ce := plain.Header().Get("Content-Encoding"); ce != "" {
		t.Fatalf("uncompressed request answered with Content-Encoding %q", ce)
	}
	if !strings.Contains(plain.Body.String(), "ctdoctor_exporter_up") {
		t.Fatalf("plain body lacks ctdoctor_exporter_up:\n%s", plain.Body)
	}
	z := get("gzip")
	if ce := z.Header().Get("Content-Encoding"); ce != "gzip" {
		t.Fatalf("gzip request answered with Content-Encoding %q", ce)
	}
	if v := z.Header().Values("Vary"); strings.Count(strings.ToLower(strings.Join(v, ",")), "accept-encoding") != 1 {
		t.Errorf("Vary: %q, want Accept-Encoding once", v)
	}
	if cl := z.Header().Get("Content-Length"); cl != "" {
		t.Errorf("gzip answer carries the uncompressed Content-Length %s", cl)
	}
	zr, err := gzip.NewReader(z.Body)
	if err != nil {
		t.Fatalf("gzip body: %v", err)
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gzip body: %v", err)
	}
	if !strings.Contains(string(body), "ctdoctor_exporter_up") || !strings.Contains(string(body), "# TYPE ") {
		t.Fatalf("decompressed body is not the exposition text:\n%s", body)
	}
	if get("gzip;q=0").Header().Get("Content-Encoding") != "" {
		t.Error("gzip;q=0 was answered compressed")
	}
}
