package exporter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/ctdoctor/ctdoctor/analyze"
)

const deployDir = "../deploy/prometheus"

// The alert rules pass `promtool check rules` and their unit tests
// (`promtool test rules`), for the exporter's rules and the
// node_exporter-only variant.
func TestPrometheusRules(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("skipped: promtool is not installed (apt-get install prometheus)")
	}
	for _, f := range []string{"rules.yml", "rules-node-exporter.yml"} {
		if out, err := exec.Command("promtool", "check", "rules", filepath.Join(deployDir, f)).CombinedOutput(); err != nil {
			t.Errorf("promtool check rules %s: %v\n%s", f, err, out)
		}
	}
	for _, f := range []string{"rules_test.yml", "rules-node-exporter_test.yml"} {
		cmd := exec.Command("promtool", "test", "rules", f)
		cmd.Dir = deployDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool test rules %s: %v\n%s", f, err, out)
		}
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// The rules stay in step with the exporter and the docs: every metric
// they name is one the exporter exports, every finding the catalogue can
// report as critical has an alert of its own, and every runbook link
// points at a section of docs/runbooks.md.
func TestRulesMatchTheExporter(t *testing.T) {
	var rf ruleFile
	b, err := os.ReadFile(filepath.Join(deployDir, "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	exported := exportedNames(t)
	runbook, err := os.ReadFile("../docs/runbooks.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(runbook), "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			anchors[strings.ToLower(strings.ReplaceAll(strings.TrimSpace(h), " ", "-"))] = true
		}
	}
	metricRE := regexp.MustCompile(`\bctdoctor_[a-z_]+`)
	findingAlerts := map[string]bool{}
	findingRE := regexp.MustCompile(`ctdoctor_finding_active\{id="([^"]+)",severity="critical"\}`)
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			for _, m := range metricRE.FindAllString(r.Expr, -1) {
				if !exported[m] {
					t.Errorf("%s: %s is not a metric the exporter exports", r.Alert, m)
				}
			}
			if m := findingRE.FindStringSubmatch(r.Expr); m != nil {
				findingAlerts[m[1]] = true
			}
			u := r.Annotations["runbook_url"]
			_, anchor, _ := strings.Cut(u, "docs/runbooks.md#")
			if !anchors[anchor] {
				t.Errorf("%s: runbook_url %q: no section %q in docs/runbooks.md", r.Alert, u, anchor)
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs a severity label, a summary and a description", r.Alert)
			}
		}
	}
	for _, s := range analyze.Catalogue() {
		if slices.Contains(s.Severities, analyze.Critical) && !findingAlerts[s.ID] {
			t.Errorf("finding %s can be critical but has no alert of its own in rules.yml", s.ID)
		}
	}
}

// The Grafana dashboard is valid JSON whose every query is PromQL that
// Prometheus accepts (each one checked by `promtool check rules` as a
// recording rule, with Grafana's variables filled in) and names only
// metrics the exporter exports.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("../deploy/grafana/conntrack.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string `json:"title"`
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("conntrack.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) < 6 {
		t.Fatalf("dashboard %q (uid %q) with %d panels", dash.Title, dash.UID, len(dash.Panels))
	}
	fill := strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$instance", ".*", "$netns", ".*")
	var exprs []string
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, fill.Replace(tg.Expr))
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+), *[a-z_]+\)$`)
	for _, v := range dash.Templating.List {
		if m := labelValues.FindStringSubmatch(v.Definition); m != nil {
			exprs = append(exprs, fill.Replace(m[1]))
		}
	}
	exported := exportedNames(t)
	metricRE := regexp.MustCompile(`\bctdoctor_[a-z_]+`)
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		for _, m := range metricRE.FindAllString(e, -1) {
			if !exported[m] {
				t.Errorf("dashboard query %q: %s is not a metric the exporter exports", e, m)
			}
		}
		q, _ := json.Marshal(e) // a JSON string is a YAML string
		fmt.Fprintf(&rules, "      - record: dashboard:query_%d\n        expr: %s\n", i, q)
	}
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("skipped the PromQL check: promtool is not installed (apt-get install prometheus)")
	}
	f := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(f, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("promtool", "check", "rules", f).CombinedOutput(); err != nil {
		t.Errorf("the dashboard's queries as recording rules: %v\n%s\n%s", err, out, rules.String())
	}
}

// exportedNames are the names of every metric the exporter can export.
func exportedNames(t *testing.T) map[string]bool {
	t.Helper()
	exported := map[string]bool{}
	ch := make(chan *prometheus.Desc, 100)
	go func() { newDescs(time.Second).describe(ch); close(ch) }()
	nameRE := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if m := nameRE.FindStringSubmatch(d.String()); m != nil {
			exported[m[1]] = true
		}
	}
	if len(exported) < 20 {
		t.Fatalf("found only %d exported metric names: the description parse is broken", len(exported))
	}
	return exported
}

// The systemd units pass `systemd-analyze verify` without a word, and the
// service keeps exactly the capabilities the privileges list names.
func TestSystemdUnits(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("skipped: systemd-analyze is not installed (apt-get install systemd)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range [][]string{
		{"ctdoctor-exporter.service"},
		{"socket-activated/ctdoctor-exporter.socket", "socket-activated/ctdoctor-exporter.service"},
	} {
		dir := t.TempDir()
		var names []string
		for _, f := range set {
			b, err := os.ReadFile(filepath.Join("../deploy/systemd", f))
			if err != nil {
				t.Fatal(err)
			}
			unit := string(b)
			if strings.HasSuffix(f, ".service") {
				for _, want := range []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "DynamicUser=yes",
					"CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_SYSLOG",
					"AmbientCapabilities=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_SYSLOG", "RestrictNamespaces=net"} {
					if !strings.Contains(unit, "\n"+want+"\n") {
						t.Errorf("%s: no %s", f, want)
					}
				}
			}
			// verify checks that ExecStart= is executable: point it at this binary.
			unit = strings.ReplaceAll(unit, "/usr/local/bin/ctdoctor", exe)
			name := filepath.Base(f)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(unit), 0o644); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
		}
		cmd := exec.Command("systemd-analyze", append([]string{"verify"}, names...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %v: %v\n%s", set, err, out)
		}
	}
	b, _ := os.ReadFile("../deploy/systemd/socket-activated/ctdoctor-exporter.socket")
	if !strings.Contains(string(b), fmt.Sprintf("ListenStream=%d", DefaultPort)) {
		t.Errorf("the socket does not listen on the default port %d", DefaultPort)
	}
}

// The Kubernetes manifests are checked against the Kubernetes API types,
// with strict decoding, in deploy/kubernetes (TestManifests).
