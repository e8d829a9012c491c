package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/internal/flowgen"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// The exporter's background diagnoses run the test binary as ctdoctor
// (see TestMain), in the tests and in the exporters they start.
func init() {
	diagnoseCommand = func(ctx context.Context, args []string) (*exec.Cmd, error) {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		js, err := json.Marshal(args)
		if err != nil {
			return nil, err
		}
		cmd := exec.CommandContext(ctx, exe)
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, childArgsEnv+"=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, childArgsEnv+"="+string(js))
		return cmd, nil
	}
}

// Bad flags are usage errors (exit 2) that name the problem.
func TestExporterUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"exporter", "--top", "0"}, "--top 0"},
		{[]string{"exporter", "--top", "101"}, "--top 101"},
		{[]string{"exporter", "--breakdown-interval", "10ms"}, "--breakdown-interval 10ms"},
		{[]string{"exporter", "--netns-discovery-interval", "0s"}, "--netns-discovery-interval"},
		{[]string{"exporter", "--max-netns", "0"}, "--max-netns 0"},
		{[]string{"exporter", "--web.max-requests", "-1"}, "--web.max-requests"},
		{[]string{"exporter", "--web.systemd-socket", "--web.listen-address", ":1"}, "alternatives"},
		{[]string{"exporter", "--netns", ""}, "--netns"},
		{[]string{"exporter", "--netns", "a/b"}, "not a name"},
		{[]string{"exporter", "--log.level", "loud"}, "--log.level"},
		{[]string{"exporter", "extra"}, "unknown command"},
		{[]string{"exporter", "--no-such-flag"}, "unknown flag"},
	} {
		var out, errb bytes.Buffer
		code := Main(c.args, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, errb.String(), c.want)
		}
	}
}

// A malformed web config and a port in use are errors at start (exit 1)
// that say what is wrong.
func TestExporterStartErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(bad, []byte("tls_server_config:\n  cert_file: [oops\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "web-missing-key.yml")
	if err := os.WriteFile(missing, []byte("tls_server_config:\n  cert_file: /nonexistent/cert.pem\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"exporter", "--no-log", "--web.listen-address", "127.0.0.1:0", "--web.config.file", bad}, bad},
		{[]string{"exporter", "--no-log", "--web.listen-address", "127.0.0.1:0", "--web.config.file", missing}, missing},
		{[]string{"exporter", "--no-log", "--web.listen-address", "127.0.0.1:0", "--web.config.file", filepath.Join(dir, "none.yml")}, "none.yml"},
		{[]string{"exporter", "--no-log", "--web.listen-address", busy.Addr().String()}, "address already in use"},
	} {
		var out, errb bytes.Buffer
		code := Main(c.args, &out, &errb)
		if code != 1 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 1 and %q", c.args, code, errb.String(), c.want)
		}
	}
}

// exporterChild is ctdoctor exporter running in a child process.
type exporterChild struct {
	cmd    *exec.Cmd
	addr   string
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan error
}

func (c *exporterChild) log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

var listeningRE = regexp.MustCompile(`msg="Listening on" address=(\S+)`)

// startExporter runs `ctdoctor exporter args…` in a child process (the
// test binary, see TestMain), as nobody inside the namespace at nsPath
// when it is set, and waits until it listens.
func startExporter(t *testing.T, nsPath string, args ...string) *exporterChild {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(append([]string{"exporter"}, args...))
	var cmd *exec.Cmd
	if nsPath != "" {
		nstest.Require(t, "nsenter")
		// The test binary's build directory is private to root: run a copy.
		bindir := worldDir(t)
		bin := filepath.Join(bindir, "ctdoctor.test")
		data, err := os.ReadFile(exe)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command("nsenter", "--net="+nsPath, "--setgid", "65534", "--setuid", "65534", "--", bin)
		cmd.Dir = bindir
	} else {
		cmd = exec.Command(exe)
	}
	cmd.Env = append(os.Environ(), childArgsEnv+"="+string(js))
	c := &exporterChild{cmd: cmd, done: make(chan error, 1)}
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- cmd.Wait(); pw.Close() }()
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			c.mu.Lock()
			c.stderr.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-c.done
		}
	})
	select {
	case c.addr = <-found:
		return c
	case err := <-c.done:
		t.Fatalf("exporter exited before listening: %v\n%s", err, c.log())
	case <-time.After(20 * time.Second):
		t.Fatalf("exporter did not listen within 20s\n%s", c.log())
	}
	return nil
}

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	return httpGetIn(t, nil, u)
}

// httpGetIn is a GET whose connection is made inside the namespace n (nil: here).
func httpGetIn(t *testing.T, n *nstest.NS, u string) (int, string) {
	t.Helper()
	client := http.DefaultClient
	if n != nil {
		client = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := n.Do(func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
	}
	resp, err := client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// sampleValue finds `name{…labels…} value` in exposition text.
func sampleValue(text, name string, labels ...string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		return v, err == nil
	}
	return 0, false
}

// SIGTERM shuts the exporter down cleanly: exit 0. The landing page and
// /metrics are served before.
func TestExporterServesAndShutsDownOnSIGTERM(t *testing.T) {
	c := startExporter(t, "", "--no-log", "--breakdown-interval", "0", "--web.listen-address", "127.0.0.1:0")
	code, body := httpGet(t, "http://"+c.addr+"/")
	if code != 200 || !strings.Contains(body, "ctdoctor exporter") || !strings.Contains(body, "CAP_NET_ADMIN") || !strings.Contains(body, "table-full") {
		t.Errorf("landing page: %d\n%s", code, body)
	}
	code, body = httpGet(t, "http://"+c.addr+"/metrics")
	if code != 200 || !strings.Contains(body, "ctdoctor_exporter_up") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.done:
		if err != nil {
			t.Errorf("after SIGTERM: %v\n%s", err, c.log())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no exit 10s after SIGTERM\n%s", c.log())
	}
	if !strings.Contains(c.log(), "shutting down") {
		t.Errorf("no shutdown in the log:\n%s", c.log())
	}
}

// Without privileges (user nobody inside a namespace holding a table),
// the exporter serves what needs none — entries, limit, buckets, usage
// and the procfs counters — and says up 0 for the listing and the kernel
// log, which need CAP_NET_ADMIN and CAP_SYSLOG.
func TestExporterUnprivileged(t *testing.T) {
	n := nstest.New(t, "conntrack", "nft")
	n.Track()
	flows := filepath.Join(t.TempDir(), "flows.txt")
	if err := flowgen.WriteFile(flows, 2000, 3); err != nil {
		t.Fatal(err)
	}
	n.LoadFlows(flows)
	want := strings.TrimSpace(n.Run("conntrack", "-C"))
	c := startExporter(t, n.Path(), "--breakdown-interval", "1s", "--web.listen-address", "127.0.0.1:0")
	var body string
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, body = httpGetIn(t, n, "http://"+c.addr+"/metrics")
		if _, ok := sampleValue(body, "ctdoctor_exporter_up", `collector="breakdown"`); ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The scrapes' own connections are tracked too: bracket the count.
	before := strings.TrimSpace(n.Run("conntrack", "-C"))
	_, body = httpGetIn(t, n, "http://"+c.addr+"/metrics")
	after := strings.TrimSpace(n.Run("conntrack", "-C"))
	lo, _ := strconv.ParseFloat(before, 64)
	hi, _ := strconv.ParseFloat(after, 64)
	if v, ok := sampleValue(body, "ctdoctor_conntrack_entries"); !ok || v < lo || v > hi {
		t.Errorf("entries %v (%v), conntrack -C %s before and %s after (%s loaded)", v, ok, before, after, want)
	}
	for _, name := range []string{"ctdoctor_conntrack_entries_limit", "ctdoctor_conntrack_buckets", "ctdoctor_conntrack_usage_ratio", "ctdoctor_conntrack_stat_drop_total"} {
		if _, ok := sampleValue(body, name); !ok {
			t.Errorf("no %s as nobody", name)
		}
	}
	for collector, up := range map[string]float64{"table": 1, "stats": 1, "breakdown": 0, "kernel_log": 0} {
		if v, ok := sampleValue(body, "ctdoctor_exporter_up", `collector="`+collector+`"`); !ok || v != up {
			t.Errorf("up{collector=%q} = %v (%v), want %v", collector, v, ok, up)
		}
	}
	if _, ok := sampleValue(body, "ctdoctor_conntrack_tcp_state_entries"); ok {
		t.Error("a breakdown without the privilege to list the entries")
	}
	// The findings that need no entries are still there.
	if _, ok := sampleValue(body, "ctdoctor_finding_active", `id="table-full"`); !ok {
		t.Error("no findings without the listing")
	}
}

// A real Prometheus scrapes the exporter: `promtool check metrics` passes
// on a real scrape, and a PromQL query over Prometheus' HTTP API returns
// the namespace's `conntrack -C` and counters.
func TestExporterScrapedByPrometheus(t *testing.T) {
	n := nstest.New(t, "conntrack", "nft", "prometheus", "promtool")
	n.Track()
	flows := filepath.Join(t.TempDir(), "flows.txt")
	if err := flowgen.WriteFile(flows, 3000, 4); err != nil {
		t.Fatal(err)
	}
	n.LoadFlows(flows)
	wantCount := strings.TrimSpace(n.Run("conntrack", "-C"))
	stats := n.Run("conntrack", "-S")

	addr, _ := runExporterInTest(t, n.Name)

	// promtool check metrics on a real scrape (with the breakdown in it).
	var body string
	for deadline := time.Now().Add(15 * time.Second); ; {
		_, body = httpGet(t, "http://"+addr+"/metrics")
		if strings.Contains(body, "ctdoctor_conntrack_tcp_state_entries") || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	check := exec.Command("promtool", "check", "metrics")
	check.Stdin = strings.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	// A Prometheus server on loopback, scraping every second.
	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: ctdoctor\n    static_configs:\n      - targets: ['%s']\n", addr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := freeAddr(t)
	prom := exec.Command("prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr)
	var promLog bytes.Buffer
	prom.Stdout, prom.Stderr = &promLog, &promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		prom.Process.Signal(syscall.SIGTERM)
		prom.Wait()
	}()
	query := func(q string) (string, bool) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return "", false
		}
		defer resp.Body.Close()
		var r struct {
			Status string `json:"status"`
			Data   struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Status != "success" || len(r.Data.Result) != 1 {
			return "", false
		}
		s, _ := r.Data.Result[0].Value[1].(string)
		return s, true
	}
	sel := fmt.Sprintf(`{netns=%q}`, n.Name)
	var got string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if v, ok := query("ctdoctor_conntrack_entries" + sel); ok {
			got = v
			break
		}
	}
	if got != wantCount {
		t.Fatalf("Prometheus: ctdoctor_conntrack_entries%s = %q, conntrack -C %s\nprometheus log:\n%s", sel, got, wantCount, promLog.String())
	}
	// The breakdown, from the background diagnosis in a child process:
	// the TCP states equal `conntrack -L` aggregated.
	list := n.Run("conntrack", "-L")
	states := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[0] == "tcp" {
			states[f[3]]++
		}
	}
	if len(states) < 3 {
		t.Fatalf("conntrack -L shows %d TCP states: %v", len(states), states)
	}
	for state, want := range states {
		var v string
		var ok bool
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			if v, ok = query(fmt.Sprintf(`ctdoctor_conntrack_tcp_state_entries{netns=%q,state=%q}`, n.Name, state)); ok {
				break
			}
		}
		if v != strconv.Itoa(want) {
			t.Errorf("Prometheus: TCP state %s = %q, conntrack -L has %d", state, v, want)
		}
	}
	// The counters `conntrack -S` shows, through Prometheus.
	for _, key := range []string{"insert", "drop", "early_drop", "insert_failed", "invalid"} {
		var want uint64
		for _, line := range strings.Split(stats, "\n") {
			for _, kv := range strings.Fields(line) {
				if v, ok := strings.CutPrefix(kv, key+"="); ok {
					n, _ := strconv.ParseUint(v, 10, 64)
					want += n
				}
			}
		}
		v, ok := query("ctdoctor_conntrack_stat_" + key + "_total" + sel)
		if !ok || v != strconv.FormatUint(want, 10) {
			t.Errorf("Prometheus: %s = %q (%v), conntrack -S sums to %d", key, v, ok, want)
		}
	}
}

// freeAddr is a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// A namespace driven into a real table full, watched by a real Prometheus
// with deploy/prometheus/rules.yml loaded: the drop counter and the
// namespace's kernel-log counter rise, and the CtdoctorTableFull alert
// fires (it has no 'for'). Opt-in like every test that fills a table to
// the global max (CTDOCTOR_TABLEFULL_TEST=1, set by CI).
func TestExporterTableFullFiresTheAlert(t *testing.T) {
	if os.Getenv("CTDOCTOR_TABLEFULL_TEST") != "1" {
		t.Skip("skipped: set CTDOCTOR_TABLEFULL_TEST=1 (fills a test netns to nf_conntrack_max and writes a \"table full\" line to the kernel log)")
	}
	n := nstest.New(t, "conntrack", "nft", "ping", "prometheus")
	n.Track()
	n.FillAssured(nstest.GlobalMax(t))

	addr, stderr := runExporterInTest(t, n.Name)
	rules, err := filepath.Abs("../../deploy/prometheus/rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files: [%q]\nscrape_configs:\n  - job_name: ctdoctor\n    static_configs:\n      - targets: ['%s']\n", rules, addr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := freeAddr(t)
	prom := exec.Command("prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr)
	var promLog bytes.Buffer
	prom.Stdout, prom.Stderr = &promLog, &promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		prom.Process.Signal(syscall.SIGTERM)
		prom.Wait()
	}()
	query := func(q string) float64 {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || len(r.Data.Result) != 1 {
			return -1
		}
		s, _ := r.Data.Result[0].Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return -1
		}
		return v
	}
	firing := func() bool {
		resp, err := http.Get("http://" + promAddr + "/api/v1/alerts")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Alerts []struct {
					Labels map[string]string `json:"labels"`
					State  string            `json:"state"`
				} `json:"alerts"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil {
			return false
		}
		for _, a := range r.Data.Alerts {
			if a.Labels["alertname"] == "CtdoctorTableFull" && a.Labels["netns"] == n.Name && a.State == "firing" {
				return true
			}
		}
		return false
	}
	sel := fmt.Sprintf(`{netns=%q}`, n.Name)
	// Drop packets: a ping every 6 s outlasts the kernel's log rate limit.
	var drops, events float64
	alert := false
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); {
		if out, err := n.Output("ping", "-c1", "-W1", "127.0.0.1"); err == nil {
			t.Fatalf("ping got through a full table:\n%s", out)
		}
		for wait := time.Now().Add(6 * time.Second); time.Now().Before(wait); time.Sleep(500 * time.Millisecond) {
			drops = query("ctdoctor_conntrack_stat_drop_total" + sel)
			events = query("ctdoctor_conntrack_kernel_log_table_full_events_total" + sel)
			alert = alert || firing()
			if drops > 0 && events > 0 && alert {
				break
			}
		}
		if drops > 0 && events > 0 && alert {
			break
		}
	}
	if drops <= 0 {
		t.Errorf("Prometheus: drop counter %v after drops in a full table", drops)
	}
	if events <= 0 {
		t.Errorf("Prometheus: kernel-log table-full events of the namespace %v", events)
	}
	if !alert {
		t.Errorf("CtdoctorTableFull did not fire for netns %s\nexporter log:\n%s\nprometheus log:\n%s", n.Name, stderr.String(), promLog.String())
	}
	if u := query("ctdoctor_conntrack_usage_ratio" + sel); u != 1 {
		t.Errorf("usage ratio %v, want 1 (filled to the global max)", u)
	}
}

// --web.config.file is exporter-toolkit's: with basic auth in it, /metrics
// needs the password.
func TestExporterBasicAuth(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "web.yml")
	// bcrypt of "conntrack", cost 10.
	if err := os.WriteFile(cfg, []byte("basic_auth_users:\n  prom: $2a$10$O7ZeHLRXeZpcumv530Dg..yiPmEkq1Bwtt5G4539QbO4eyq5expFy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startExporter(t, "", "--no-log", "--breakdown-interval", "0", "--web.listen-address", "127.0.0.1:0", "--web.config.file", cfg)
	if code, _ := httpGet(t, "http://"+c.addr+"/metrics"); code != http.StatusUnauthorized {
		t.Errorf("without a password: HTTP %d, want 401", code)
	}
	for pass, want := range map[string]int{"wrong": http.StatusUnauthorized, "conntrack": http.StatusOK} {
		req, _ := http.NewRequest("GET", "http://"+c.addr+"/metrics", nil)
		req.SetBasicAuth("prom", pass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("password %q: HTTP %d, want %d", pass, resp.StatusCode, want)
		}
	}
}

// runExporterInTest runs the exporter command in this process for one
// namespace on a free loopback port until the test ends (a clean shutdown
// is checked then), and returns its address and its log.
func runExporterInTest(t *testing.T, netns string) (string, *bytes.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan []net.Addr, 1)
	o := &exporterOptions{listen: []string{"127.0.0.1:0"}, maxRequests: 40, netns: []string{netns}, maxNetNS: 16,
		breakdownInterval: time.Second, discoveryInterval: 15 * time.Second, top: 10, logLevel: "warn",
		ready: func(a []net.Addr) { ready <- a }}
	stderr := &bytes.Buffer{}
	errc := make(chan error, 1)
	go func() { errc <- runExporter(ctx, o, stderr) }()
	select {
	case a := <-ready:
		t.Cleanup(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("exporter: %v", err)
			}
		})
		return a[0].String(), stderr
	case err := <-errc:
		cancel()
		t.Fatalf("exporter: %v: %s", err, stderr.String())
	}
	return "", nil
}
