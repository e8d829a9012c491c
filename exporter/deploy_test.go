package exporter

import (
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
	exported := map[string]bool{}
	ch := make(chan *prometheus.Desc, 100)
	go func() { newDescs(time.Second).describe(ch); close(ch) }()
	nameRE := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if m := nameRE.FindStringSubmatch(d.String()); m != nil {
			exported[m[1]] = true
		}
	}
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
	if len(exported) < 20 {
		t.Fatalf("found only %d exported metric names: the description parse is broken", len(exported))
	}
}
