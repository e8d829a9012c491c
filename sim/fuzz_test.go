package sim

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/engine"
)

// FuzzParseScenario: any input gives a scenario or an error naming the
// file, never a panic; a scenario that parses also validates and gets a
// tracker.
func FuzzParseScenario(f *testing.F) {
	f.Add([]byte(good))
	for _, b := range Builtins() {
		data, err := BuiltinSource(b.Name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("name: x\nduration: 1m\nworkloads: [{rate: {peak: 5, peak_at: \"23:59\"}, client: ::1, server: ::1, server_port: 1}]\n"))
	f.Add([]byte("a: &a [*a, *a]\nb: &b [*a, *a]\n"))
	f.Add([]byte("duration: 1d12h\nworkloads:\n  - {proto: icmp, rate: 1M, client: 10.0.0.0/8, server: 10.0.0.0/30}\n"))
	f.Add([]byte(strings.Replace(good, "    client: 198", "   client: 198", 1)))
	f.Add([]byte("workloads:\n  - name: a\n   rate: 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := ParseScenario("f.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			// A syntax error's line is one of the input's.
			var line int
			if _, e := fmt.Sscanf(err.Error(), "f.yaml:%d: invalid YAML", &line); e == nil &&
				(line < 1 || line > bytes.Count(data, []byte("\n"))+1) {
				t.Fatalf("line %d of a %d-line input: %v", line, bytes.Count(data, []byte("\n"))+1, err)
			}
			return
		}
		if err := sc.Validate(); err != nil {
			t.Fatalf("parsed but does not validate: %v\n%s", err, data)
		}
		set := sc.EffectiveSettings()
		if set[engine.SetBuckets] > 1<<20 {
			return // a valid table too big to allocate for every fuzz input
		}
		if _, err := New(sc, Options{}); err != nil {
			t.Fatalf("parsed but the tracker refuses it: %v\n%s", err, data)
		}
	})
}
