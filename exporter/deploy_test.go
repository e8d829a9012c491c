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

// The Kubernetes manifests hold a DaemonSet in the host's network and PID
// namespaces with only the capabilities the privileges list names, a
// read-only root filesystem and resource requests and limits, a Service
// and a ServiceMonitor whose ports agree, on the exporter's default port.
// (Checked field by field: the Kubernetes API types are not a dependency.)
func TestKubernetesManifests(t *testing.T) {
	f, err := os.Open("../deploy/kubernetes/ctdoctor-exporter.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	docs := map[string]map[string]any{}
	dec := yaml.NewDecoder(f)
	for {
		var d map[string]any
		if err := dec.Decode(&d); err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatal(err)
		}
		kind, _ := d["kind"].(string)
		if d["apiVersion"] == nil || kind == "" || dig(d, "metadata", "name") == nil {
			t.Errorf("a document without apiVersion, kind or name: %v", d)
		}
		docs[kind] = d
	}
	for _, k := range []string{"Namespace", "DaemonSet", "Service", "ServiceMonitor"} {
		if docs[k] == nil {
			t.Fatalf("no %s", k)
		}
	}
	ds := docs["DaemonSet"]
	if dig(ds, "apiVersion") != "apps/v1" || dig(ds, "spec", "template", "spec", "hostNetwork") != true || dig(ds, "spec", "template", "spec", "hostPID") != true {
		t.Error("the DaemonSet must be apps/v1 with hostNetwork and hostPID")
	}
	sel, tmpl := dig(ds, "spec", "selector", "matchLabels", "app.kubernetes.io/name"), dig(ds, "spec", "template", "metadata", "labels", "app.kubernetes.io/name")
	if sel == nil || sel != tmpl {
		t.Errorf("selector %v does not match the template's labels %v", sel, tmpl)
	}
	cs, _ := dig(ds, "spec", "template", "spec", "containers").([]any)
	if len(cs) != 1 {
		t.Fatalf("%d containers", len(cs))
	}
	c := cs[0].(map[string]any)
	sc := dig(c, "securityContext")
	if dig(sc, "readOnlyRootFilesystem") != true || dig(sc, "allowPrivilegeEscalation") != false || dig(sc, "privileged") != false {
		t.Errorf("securityContext %v: want a read-only root, no privilege escalation, not privileged", sc)
	}
	if got := fmt.Sprint(dig(sc, "capabilities", "drop")); got != "[ALL]" {
		t.Errorf("capabilities drop %s, want [ALL]", got)
	}
	if got := fmt.Sprint(dig(sc, "capabilities", "add")); got != "[NET_ADMIN SYS_ADMIN SYS_PTRACE SYSLOG]" {
		t.Errorf("capabilities add %s, want the four the exporter uses", got)
	}
	for _, k := range []string{"cpu", "memory"} {
		if dig(c, "resources", "requests", k) == nil {
			t.Errorf("no %s request", k)
		}
	}
	if dig(c, "resources", "limits", "memory") == nil {
		t.Error("no memory limit")
	}
	ports, _ := dig(c, "ports").([]any)
	if len(ports) != 1 || dig(ports[0], "containerPort") != DefaultPort || dig(ports[0], "name") != "metrics" {
		t.Errorf("container ports %v, want metrics on %d", ports, DefaultPort)
	}
	if args := fmt.Sprint(dig(c, "args")); !strings.Contains(args, fmt.Sprintf(":%d", DefaultPort)) || !strings.Contains(args, "exporter") {
		t.Errorf("args %s", args)
	}
	svcPorts, _ := dig(docs["Service"], "spec", "ports").([]any)
	if len(svcPorts) != 1 || dig(svcPorts[0], "targetPort") != "metrics" || dig(svcPorts[0], "port") != DefaultPort {
		t.Errorf("Service ports %v", svcPorts)
	}
	if dig(docs["Service"], "spec", "selector", "app.kubernetes.io/name") != sel {
		t.Error("the Service does not select the DaemonSet's pods")
	}
	eps, _ := dig(docs["ServiceMonitor"], "spec", "endpoints").([]any)
	if len(eps) != 1 || dig(eps[0], "port") != dig(svcPorts[0], "name") {
		t.Errorf("ServiceMonitor endpoints %v do not name the Service's port", eps)
	}
	if dig(docs["ServiceMonitor"], "spec", "selector", "matchLabels", "app.kubernetes.io/name") != dig(docs["Service"], "metadata", "labels", "app.kubernetes.io/name") {
		t.Error("the ServiceMonitor does not select the Service")
	}
}

// dig walks nested maps.
func dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}
