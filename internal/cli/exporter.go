package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prometheus/exporter-toolkit/web"
	"github.com/spf13/cobra"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/exporter"
)

type exporterOptions struct {
	listen            []string
	webConfig         string
	systemdSocket     bool
	maxRequests       int
	netns             []string
	allNetNS          bool
	maxNetNS          int
	breakdownInterval time.Duration
	discoveryInterval time.Duration
	top               int
	noLog             bool
	perCPU            bool
	logLevel          string

	// ready, when set (tests), is called with the addresses listened on
	// once the server accepts connections.
	ready func([]net.Addr)
}

// diagnoseCommand makes the child process that runs a background
// diagnosis with args (nil: this executable); the tests run the test
// binary as ctdoctor.
var diagnoseCommand func(ctx context.Context, args []string) (*exec.Cmd, error)

// listingNice is the CPU priority (nice value) of the background listings.
const listingNice = 10

// childDiagnose runs `ctdoctor [--netns PATH] -o json` in a child process
// at nice listingNice and reads its report: the listing's memory goes with
// the child, and scrapes keep the CPU while it runs.
func childDiagnose(ctx context.Context, nsPath string, top int) (*analyze.Report, error) {
	args := []string{"-o", "json", "--color", "never", "--interval", exporter.CounterSampleInterval.String(), "--top", strconv.Itoa(top), "--no-plan"}
	if nsPath != "" {
		args = append(args, "--netns", nsPath)
	}
	mk := diagnoseCommand
	if mk == nil {
		mk = func(ctx context.Context, args []string) (*exec.Cmd, error) {
			exe, err := os.Executable()
			if err != nil {
				return nil, err
			}
			return exec.CommandContext(ctx, exe, args...), nil
		}
	}
	cmd, err := mk(ctx, args)
	if err != nil {
		return nil, fmt.Errorf("background diagnosis: %w", err)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("background diagnosis: %w", err)
	}
	_ = unix.Setpriority(unix.PRIO_PROCESS, cmd.Process.Pid, listingNice)
	if err := cmd.Wait(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		return nil, fmt.Errorf("background diagnosis (ctdoctor %s): %w: %s", strings.Join(args, " "), err, msg)
	}
	var rep analyze.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		return nil, fmt.Errorf("background diagnosis: its report: %w", err)
	}
	return &rep, nil
}

func newExporterCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &exporterOptions{}
	var ids []string
	for _, s := range analyze.Catalogue() {
		ids = append(ids, fmt.Sprintf("  %-26s %s", s.ID, strings.Join(s.Severities, "|")))
	}
	c := &cobra.Command{
		Use:   "exporter",
		Short: "Serve conntrack metrics and findings to Prometheus",
		Long: fmt.Sprintf(`exporter serves the conntrack tables of this host's network namespaces to
Prometheus: entries, limit, buckets and usage ratio, every per-CPU counter
the kernel has (drop, early_drop, insert_failed, … as _total counters), the
kernel log's table-full events, and — from a background listing of the
whole table every --breakdown-interval — entries by protocol, TCP state,
flag, loopback, NAT and top services, ctdoctor's findings as 0/1 gauges,
and the estimated time until the table is full.

A scrape reads a few small files per namespace and never lists the table:
the breakdown comes from the last background listing (its HELP text says
so) and scrapes never wait for it. Concurrent scrapes share one read.

The default port, %d, lies outside the range 9100-9999 that Prometheus'
list of default exporter ports has fully allocated.

Privileges:
%s

Finding ids (ctdoctor_finding_active{id,severity}; every id and severity is
always exported, so alerts can use == 1):
%s

Exit status: 0 after a clean shutdown (SIGTERM or SIGINT), 1 when it cannot
start (a port in use, a malformed --web.config.file), 2 on usage errors.`,
			exporter.DefaultPort, indent(exporter.Privileges, "  "), strings.Join(ids, "\n")),
		Example: `  ctdoctor exporter                                   # this namespace, on :19630
  ctdoctor exporter --all-netns                       # every namespace, found again as they come and go
  ctdoctor exporter --netns web1 --netns web2 --web.listen-address 127.0.0.1:19630
  ctdoctor exporter --web.config.file web.yml         # TLS and basic auth (Prometheus' web config format)
  curl -s localhost:19630/metrics | grep ctdoctor_conntrack_entries`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(cmd); err != nil {
				return usageError(cmd, err)
			}
			return runExporter(cmd.Context(), o, stderr)
		},
	}
	f := c.Flags()
	f.StringArrayVar(&o.listen, "web.listen-address", []string{fmt.Sprintf(":%d", exporter.DefaultPort)}, "`ADDRESS` to listen on for the landing page and /metrics (repeatable)")
	f.StringVar(&o.webConfig, "web.config.file", "", "Prometheus web configuration `FILE` enabling TLS or basic authentication")
	f.BoolVar(&o.systemdSocket, "web.systemd-socket", false, "use systemd socket activation listeners instead of port listeners")
	f.IntVar(&o.maxRequests, "web.max-requests", 100, "maximum `N` of parallel /metrics requests; more are answered 503 (0: no limit; parallel scrapes share one read)")
	f.StringArrayVar(&o.netns, "netns", nil, "network namespace to watch: a `NAME` from /run/netns, a path, or a PID (repeatable; default: the exporter's own)")
	f.BoolVar(&o.allNetNS, "all-netns", false, "watch every network namespace of the host, found again every --netns-discovery-interval")
	f.IntVar(&o.maxNetNS, "max-netns", exporter.DefaultMaxNetNS, "watch at most `N` namespaces (each is about 90 series)")
	f.DurationVar(&o.breakdownInterval, "breakdown-interval", exporter.DefaultBreakdownInterval, "time between background listings of each table for the breakdowns and findings (0: none)")
	f.DurationVar(&o.discoveryInterval, "netns-discovery-interval", exporter.DefaultDiscoveryInterval, "how often the namespaces are looked up again")
	f.IntVar(&o.top, "top", exporter.DefaultTopServices, fmt.Sprintf("export the top `K` services by entries, plus \"other\" (1 to %d)", exporter.MaxTopServices))
	f.BoolVar(&o.noLog, "no-log", false, "do not follow the kernel log (no table-full event counter)")
	f.BoolVar(&o.perCPU, "per-cpu", false, "also export every counter per CPU (one series per CPU and counter)")
	f.StringVar(&o.logLevel, "log.level", "info", "log `LEVEL`: debug, info, warn or error")
	_ = c.RegisterFlagCompletionFunc("netns", completeNetNS)
	_ = c.RegisterFlagCompletionFunc("log.level", cobra.FixedCompletions([]string{"debug", "info", "warn", "error"}, cobra.ShellCompDirectiveNoFileComp))
	return c
}

func indent(s, pre string) string {
	return pre + strings.ReplaceAll(s, "\n", "\n"+pre)
}

// validate checks the flags that exporter.New would refuse, as usage errors.
func (o *exporterOptions) validate(cmd *cobra.Command) error {
	switch {
	case o.top < 1 || o.top > exporter.MaxTopServices:
		return fmt.Errorf("--top %d: want 1 to %d (every service is a time series per namespace)", o.top, exporter.MaxTopServices)
	case o.breakdownInterval < 0 || (o.breakdownInterval > 0 && o.breakdownInterval < time.Second):
		return fmt.Errorf("--breakdown-interval %s: want at least 1s (each one lists the whole table), or 0 for none", o.breakdownInterval)
	case o.discoveryInterval < time.Second:
		return fmt.Errorf("--netns-discovery-interval %s: want at least 1s", o.discoveryInterval)
	case o.maxNetNS < 1:
		return fmt.Errorf("--max-netns %d: want at least 1", o.maxNetNS)
	case o.maxRequests < 0:
		return fmt.Errorf("--web.max-requests %d: want 0 (no limit) or more", o.maxRequests)
	case o.systemdSocket && cmd.Flags().Changed("web.listen-address"):
		return errors.New("--web.systemd-socket and --web.listen-address are alternatives: systemd hands over the sockets")
	case !o.systemdSocket && len(o.listen) == 0:
		return errors.New("--web.listen-address: give at least one address")
	}
	for _, n := range o.netns {
		if n == "" {
			return errors.New("--netns: an empty value")
		}
	}
	if _, err := parseLogLevel(o.logLevel); err != nil {
		return err
	}
	return nil
}

func parseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log.level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// runExporter serves until SIGTERM or SIGINT (or ctx ends), then shuts down.
func runExporter(ctx context.Context, o *exporterOptions, stderr io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	level, _ := parseLogLevel(o.logLevel)
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if o.webConfig != "" {
		if err := web.Validate(o.webConfig); err != nil {
			return fmt.Errorf("--web.config.file %s: %w", o.webConfig, err)
		}
	}
	interval := o.breakdownInterval
	if interval == 0 {
		interval = -1 // no background listing
	}
	exp, err := exporter.New(exporter.Options{NetNS: o.netns, AllNetNS: o.allNetNS, MaxNetNS: o.maxNetNS,
		DiscoveryInterval: o.discoveryInterval, BreakdownInterval: interval, TopServices: o.top,
		NoKernelLog: o.noLog, PerCPU: o.perCPU, Logger: logger, Diagnose: childDiagnose})
	if err != nil {
		return usageError(nil, err)
	}
	handler, err := exp.Handler(exporter.HandlerOptions{MaxRequests: o.maxRequests, Version: versionString(), Logger: logger})
	if err != nil {
		return err
	}
	// Listen before starting anything, so that a port in use is an error at start.
	var listeners []net.Listener
	delegate := o.systemdSocket
	for _, a := range o.listen {
		if strings.HasPrefix(a, "vsock://") {
			delegate = true
		}
	}
	if !delegate {
		for _, a := range o.listen {
			l, err := net.Listen("tcp", a)
			if err != nil {
				for _, l := range listeners {
					l.Close()
				}
				return fmt.Errorf("--web.listen-address %s: %w", a, err)
			}
			listeners = append(listeners, l)
		}
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	bg, cancel := context.WithCancel(context.Background())
	exp.Start(bg)
	defer func() {
		cancel()
		exp.Wait()
	}()
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	flags := &web.FlagConfig{WebListenAddresses: &o.listen, WebSystemdSocket: &o.systemdSocket, WebConfigFile: &o.webConfig}
	served := make(chan error, 1)
	go func() {
		if delegate {
			served <- web.ListenAndServe(srv, flags, logger)
			return
		}
		served <- web.ServeMultiple(listeners, srv, flags, logger)
	}()
	if o.ready != nil && !delegate {
		addrs := make([]net.Addr, len(listeners))
		for i, l := range listeners {
			addrs[i] = l.Addr()
		}
		o.ready(addrs)
	}
	select {
	case err := <-served:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
