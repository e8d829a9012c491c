package exporter

import (
	"fmt"
	"html"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/ctdoctor/ctdoctor/analyze"
)

// DefaultPort is the exporter's default TCP port. Prometheus' list of
// default exporter ports has allocated every port from 9100 to 9999, so
// ctdoctor's is outside that range (and outside 9090–9094, Prometheus'
// own components).
const DefaultPort = 19630

// Privileges says which metrics need which privilege (for --help and the
// landing page).
const Privileges = `Without privileges (any user, own network namespace): entries, limit,
buckets, usage ratio, and the per-CPU counters from /proc/net/stat/nf_conntrack.
CAP_NET_ADMIN: the background listing of the entries (entries by protocol,
TCP state, flag, loopback, NAT and service; the findings that count
entries) and, on kernels without /proc/net/stat/nf_conntrack (built without
CONFIG_NF_CONNTRACK_PROCFS), the per-CPU counters over ctnetlink.
CAP_SYS_ADMIN: --netns and --all-netns (entering other namespaces), with
CAP_SYS_PTRACE for namespaces named by a PID of another user.
CAP_SYSLOG (when kernel.dmesg_restrict=1): the kernel log's table-full events.
Whatever cannot be read is reported as ctdoctor_exporter_up{collector=...} 0;
the rest keeps working.`

// HandlerOptions shape the HTTP handler.
type HandlerOptions struct {
	// MaxRequests bounds the /metrics requests served at once (0: no
	// bound); more are answered 503.
	MaxRequests int
	// Version is shown on the landing page.
	Version string
	// Logger receives errors of serving metrics.
	Logger *slog.Logger
}

// Handler serves the landing page on / and the metrics on /metrics, with
// the Go runtime's and the process's own metrics beside the exporter's.
func (e *Exporter) Handler(opt HandlerOptions) (http.Handler, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(e); err != nil {
		return nil, fmt.Errorf("register the exporter: %w", err)
	}
	reg.MustRegister(collectors.NewGoCollector(), newProcessCollector())
	log := opt.Logger
	if log == nil {
		log = e.log
	}
	metrics := promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelError),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: opt.MaxRequests,
		Registry:            reg,
	}))
	landing, err := web.NewLandingPage(web.LandingConfig{
		Name:        "ctdoctor exporter",
		Description: "Linux conntrack tables: size, counters, breakdowns and ctdoctor's findings, per network namespace",
		Version:     opt.Version,
		Links:       []web.LandingLinks{{Address: "metrics", Text: "Metrics"}},
		ExtraHTML:   e.landingHTML(),
		Profiling:   "false",
	})
	if err != nil {
		return nil, fmt.Errorf("landing page: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", fastGzip(metrics))
	mux.Handle("/", landing)
	return mux, nil
}

// landingHTML is the landing page's body: what is watched, the cost
// model, the privileges and the finding ids.
func (e *Exporter) landingHTML() string {
	var b strings.Builder
	var names []string
	for _, t := range e.currentTargets() {
		names = append(names, t.label)
	}
	watch := "the exporter's own network namespace"
	switch {
	case e.opt.AllNetNS:
		watch = fmt.Sprintf("every network namespace of the host (looked up every %s)", e.opt.DiscoveryInterval)
	case len(e.opt.NetNS) > 0:
		watch = "the network namespaces " + strings.Join(e.opt.NetNS, ", ")
	}
	fmt.Fprintf(&b, "<h3>Watching</h3><p>%s: now %s.</p>", html.EscapeString(watch), html.EscapeString(strings.Join(names, ", ")))
	bd := "off (--breakdown-interval negative)"
	if e.opt.BreakdownInterval > 0 {
		bd = fmt.Sprintf("every %s, in the background, one namespace at a time; a scrape never waits for it and shows the last result; top %d services plus \"other\"", e.opt.BreakdownInterval, e.opt.TopServices)
	}
	fmt.Fprintf(&b, "<h3>Cost</h3><p>Every scrape reads a few small procfs files per namespace (count, limit, buckets, counters); concurrent scrapes share one read. The breakdown lists the whole table: %s.</p>", html.EscapeString(bd))
	fmt.Fprintf(&b, "<h3>Privileges</h3><pre>%s</pre>", html.EscapeString(Privileges))
	b.WriteString("<h3>Findings (ctdoctor_finding_active)</h3><ul>")
	for _, s := range analyze.Catalogue() {
		fmt.Fprintf(&b, "<li><code>%s</code> (%s): %s</li>", html.EscapeString(s.ID), html.EscapeString(strings.Join(s.Severities, ", ")), html.EscapeString(s.Title))
	}
	b.WriteString("</ul>")
	return b.String()
}
