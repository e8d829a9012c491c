package cli

import (
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"github.com/ctdoctor/ctdoctor/sim"
)

func TestSimulateDeriveUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--netns", "web1", "nginx-local-upstream"}, "do not name one"},
		{[]string{"--snapshot", "x.tar.gz", "--from-host"}, "give one"},
		{[]string{"--snapshot", "x.tar.gz", "--netns", "web1"}, "give one"},
		{[]string{"--from-host", "--pcap", "x.pcap"}, "--pcap replays a capture"},
		{[]string{"--from-host", "--list"}, "--list takes no scenario"},
		{nil, "--from-host"}, // the usage error names the new way too
	} {
		code, _, errs := simulate(t, c.args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("simulate %v: exit %d, %q; want 2 and %q", c.args, code, errs, c.want)
		}
	}
}

// loopbackTraffic makes, in the namespace, 400 short connections to
// 127.0.0.1:8080 (the server closes first: TIME_WAIT entries) and holds
// 30 connections to 127.0.0.1:9090 open until the test ends.
func loopbackTraffic(t *testing.T, ns *nstest.NS) {
	t.Helper()
	var (
		mu        sync.Mutex
		held      []net.Conn
		listeners []net.Listener
	)
	keep := func(c net.Conn) {
		mu.Lock()
		held = append(held, c)
		mu.Unlock()
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
		for _, l := range listeners {
			l.Close()
		}
	})
	err := ns.Do(func() error {
		short, err := net.Listen("tcp4", "127.0.0.1:8080")
		if err != nil {
			return err
		}
		long, err := net.Listen("tcp4", "127.0.0.1:9090")
		if err != nil {
			return err
		}
		listeners = append(listeners, short, long)
		go func() {
			for {
				c, err := short.Accept()
				if err != nil {
					return
				}
				_, _ = c.Read(make([]byte, 64))
				c.Close()
			}
		}()
		go func() {
			for {
				c, err := long.Accept()
				if err != nil {
					return
				}
				keep(c)
			}
		}()
		for range 400 {
			c, err := net.Dial("tcp4", "127.0.0.1:8080")
			if err != nil {
				return err
			}
			_, _ = c.Write([]byte("GET /\n"))
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
		for range 30 {
			c, err := net.Dial("tcp4", "127.0.0.1:9090")
			if err != nil {
				return err
			}
			keep(c)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSimulateDeriveNetns: --netns NAME --print shows the scenario derived
// from the namespace's table as YAML that `simulate FILE` runs; without
// --print it is simulated at once; a snapshot of the same namespace
// derives the same workloads.
func TestSimulateDeriveNetns(t *testing.T) {
	ns := nstest.New(t, "nft")
	ns.Track()
	loopbackTraffic(t, ns)

	code, out, errs := simulate(t, "--netns", ns.Name, "--print")
	if code != 0 {
		t.Fatalf("--netns %s --print: exit %d: %s", ns.Name, code, errs)
	}
	sc, err := sim.ParseScenario("derived.yaml", []byte(out))
	if err != nil {
		t.Fatalf("the printed scenario does not parse: %v\n%s", err, out)
	}
	var got []string
	for _, w := range sc.Workloads {
		got = append(got, w.Name)
	}
	if strings.Join(got, " ") != "tcp-8080-lo tcp-9090-lo-open" {
		t.Errorf("workloads %v, want the short connections on 8080 and the 30 held open on 9090\n%s", got, out)
	}
	if !strings.Contains(sc.Description, "network namespace "+ns.Name) || !strings.Contains(sc.Description, "TIME_WAIT ÷ 120 s") {
		t.Errorf("description:\n%s", sc.Description)
	}
	file := filepath.Join(t.TempDir(), "derived.yaml")
	if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	code, jsonOut, errs := simulate(t, file, "-o", "json")
	if code != 0 {
		t.Fatalf("simulate %s: exit %d: %s", file, code, errs)
	}
	var res struct {
		Summary struct {
			Peak int `json:"peak"`
		} `json:"summary"`
	}
	if err := json.Unmarshal([]byte(jsonOut), &res); err != nil || res.Summary.Peak < 30 {
		t.Errorf("simulate %s -o json: %v, peak %d (want at least the 30 held open)", file, err, res.Summary.Peak)
	}
	code, text, errs := simulate(t, "--netns", ns.Name, "--color", "never")
	if code != 0 || !strings.Contains(text, sc.Name) || !strings.Contains(text, "never fills") {
		t.Errorf("--netns %s: exit %d, %s\n%s", ns.Name, code, errs, text)
	}

	archive := filepath.Join(t.TempDir(), "snap.tar.gz")
	var sout, serr strings.Builder
	if code := Main([]string{"snapshot", "--netns", ns.Name, "-o", archive}, &sout, &serr); code != 0 {
		t.Fatalf("snapshot: exit %d: %s", code, serr.String())
	}
	code, out, errs = simulate(t, "--snapshot", archive, "--print")
	if code != 0 {
		t.Fatalf("--snapshot --print: exit %d: %s", code, errs)
	}
	fromSnap, err := sim.ParseScenario("snap.yaml", []byte(out))
	if err != nil || len(fromSnap.Workloads) != len(sc.Workloads) || fromSnap.Workloads[0].Name != "tcp-8080-lo" {
		t.Errorf("from the snapshot: %v\n%s", err, out)
	}
}

func TestSimulateDeriveNoNamespace(t *testing.T) {
	nstest.Require(t)
	code, _, errs := simulate(t, "--netns", "ctdoctor-no-such-namespace", "--print")
	if code != 1 || !strings.Contains(errs, "ctdoctor-no-such-namespace") {
		t.Errorf("exit %d, %q: want 1 and the namespace named", code, errs)
	}
}
