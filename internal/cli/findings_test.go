package cli

import (
	"encoding/json"
	"strings"
	"testing"
)

// findings lists the catalogue: every id once, the ones the fixture hosts
// produce among them, in text and JSON.
func TestFindingsCommand(t *testing.T) {
	var doc struct {
		Schema   string
		Findings []struct {
			ID         string
			Severities []string
		}
	}
	if err := json.Unmarshal([]byte(run(t, "findings", "-o", "json")), &doc); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, f := range doc.Findings {
		if ids[f.ID] || len(f.Severities) == 0 {
			t.Errorf("finding %q listed twice or without severities", f.ID)
		}
		ids[f.ID] = true
	}
	for _, want := range []string{"table-full", "loopback-tracked", "local-ports-exhausted", "kube-proxy-manages"} {
		if !ids[want] {
			t.Errorf("%s missing from %v", want, ids)
		}
	}
	r := report(t, "--root", "../../host/testdata/hosts/centos5")
	for _, f := range r.Findings {
		if !ids[f.ID] {
			t.Errorf("the report's finding %s is not in the list", f.ID)
		}
	}
	text := run(t, "findings")
	if lines := strings.Count(text, "\n"); lines != len(doc.Findings)+1 {
		t.Errorf("text has %d lines for %d findings:\n%s", lines, len(doc.Findings), text)
	}
}
