package render

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/analyze"
	"github.com/ctdoctor/ctdoctor/host"
)

// TestKernelLogNetNSLines: a gone namespace whose inode number was reused
// reads "(gone; number since reused by demo)" in the text, while the JSON
// keeps its name field for names (empty here) and says gone/reused_by.
func TestKernelLogNetNSLines(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 5, 0, 0, 0, time.UTC)
	r := sample()
	r.Log = analyze.LogInfo{Source: "/dev/kmsg", TableFullEvents: 31, First: "2026-11-21T05:01:40Z", Last: "2026-11-21T05:05:09Z",
		NetNS: []host.NetNSCount{
			{Inode: 4026532177, Count: 21, First: t0.Add(100 * time.Second), Last: t0.Add(120 * time.Second), Gone: true, ReusedBy: "demo"},
			{Inode: 4026532177, Name: "demo", Count: 10, First: t0.Add(300 * time.Second), Last: t0.Add(309 * time.Second)},
			{Inode: 4026532400, Count: 2},
			{Inode: 4026532500, Count: 1, Gone: true, ReusedBy: "customer-acme-production-eu-west-1-primary-7"},
		}}
	var b bytes.Buffer
	if err := Text(&b, r, TextOptions{Width: 120}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"netns 4026532177 (gone; number since reused by demo): 21\n", "netns 4026532177 (demo): 10\n", "netns 4026532400: 2\n",
		// A long name is shortened in its middle, the words before it kept.
		"netns 4026532500 (gone; number since reused by custo…cme-production-eu-west-1-primary-7): 1\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := JSON(&b, r); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Log struct {
			NetNS []map[string]any `json:"netns"`
		} `json:"log"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	g := got.Log.NetNS[0]
	if _, named := g["name"]; named || g["gone"] != true || g["reused_by"] != "demo" || g["count"] != 21.0 {
		t.Errorf("gone entry in JSON: %v", g)
	}
	if d := got.Log.NetNS[1]; d["name"] != "demo" || d["gone"] != nil || d["count"] != 10.0 {
		t.Errorf("demo in JSON: %v", d)
	}
}
