package flowgen

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

func entries(t *testing.T, n int, seed uint64) []Entry {
	t.Helper()
	var out []Entry
	if err := DefaultSpec.Each(n, seed, func(e *Entry) error { out = append(out, *e); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// The same size and seed give the same bytes; the golden hash pins the
// stream, so a change of generator (which would silently change what
// every test and benchmark loads) shows up here. Another seed gives
// another table.
func TestDeterministic(t *testing.T) {
	var a, b, c bytes.Buffer
	for _, w := range []struct {
		buf  *bytes.Buffer
		seed uint64
	}{{&a, 1}, {&b, 1}, {&c, 2}} {
		if err := Write(w.buf, 2000, w.seed); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two runs with seed 1 differ")
	}
	if bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Fatal("seeds 1 and 2 give the same table")
	}
	if n := bytes.Count(a.Bytes(), []byte("\n")); n != 2000 {
		t.Fatalf("%d lines, want 2000", n)
	}
	sum := sha256.Sum256(a.Bytes())
	const golden = "d80a9ec66425b00111e815163188c5ca5f90217022c9162d53ba1ec4035f7e29"
	if got := hex.EncodeToString(sum[:]); got != golden {
		t.Errorf("Write(2000, 1) hashes to %s, pinned %s: the generator's output changed", got, golden)
	}
}

// The mix follows the spec, each share within 4 standard deviations of
// the binomial sampling error, and no two entries share a tuple.
func TestShares(t *testing.T) {
	const n = 100000
	es := entries(t, n, 7)
	if len(es) != n {
		t.Fatalf("%d entries, want %d", len(es), n)
	}
	count := map[string]int{}
	seen := map[string]bool{}
	for i := range es {
		e := &es[i]
		count[e.Proto]++
		count["state "+e.State]++
		if e.Proto == "tcp" {
			count[fmt.Sprintf("tcp port %d", e.DstPort)]++
		}
		if e.Proto == "udp" && !e.Replied {
			count["udp unreplied"]++
		}
		if e.Src.As4()[1] == 1 {
			count["heavy"]++
		}
		if e.Assured && !e.Replied {
			t.Fatalf("assured but never replied: %+v", e)
		}
		max := DefaultSpec.MaxTimeout
		if e.State == "ESTABLISHED" {
			max = DefaultSpec.MaxEstablished
		}
		if e.Timeout < DefaultSpec.MinTimeout || e.Timeout > max {
			t.Fatalf("timeout %d outside %d–%d: %+v", e.Timeout, DefaultSpec.MinTimeout, max, e)
		}
		k := fmt.Sprintf("%s %v %v %d %d %d", e.Proto, e.Src, e.Dst, e.SrcPort, e.DstPort, e.ICMPID)
		if seen[k] {
			t.Fatalf("tuple %s twice", k)
		}
		seen[k] = true
	}
	check := func(what string, got, of int, p float64) {
		t.Helper()
		mean := float64(of) * p
		sd := math.Sqrt(float64(of) * p * (1 - p))
		if math.Abs(float64(got)-mean) > 4*sd+1 {
			t.Errorf("%s: %d of %d, want %.0f ± %.0f (share %.3f)", what, got, of, mean, 4*sd, p)
		}
	}
	s := DefaultSpec
	check("tcp", count["tcp"], n, s.TCP)
	check("udp", count["udp"], n, s.UDP)
	check("icmp", count["icmp"], n, 1-s.TCP-s.UDP)
	check("heavy sources", count["heavy"], n, s.HeavyShare)
	check("udp unreplied", count["udp unreplied"], count["udp"], s.UDPUnreplied)
	for _, w := range s.TCPStates {
		check("state "+w.Value, count["state "+w.Value], count["tcp"], float64(w.Weight)/float64(total(s.TCPStates)))
	}
	for _, w := range s.TCPPorts {
		k := fmt.Sprintf("tcp port %d", w.Value)
		check(k, count[k], count["tcp"], float64(w.Weight)/float64(total(s.TCPPorts)))
	}
}

func TestBadSpec(t *testing.T) {
	for _, c := range []struct {
		name string
		mod  func(*Spec)
	}{
		{"shares above 1", func(s *Spec) { s.UDP = 0.5 }},
		{"no states", func(s *Spec) { s.TCPStates = nil }},
		{"no servers", func(s *Spec) { s.Servers = 0 }},
		{"timeouts reversed", func(s *Spec) { s.MaxTimeout = 10 }},
		{"heavy without sources", func(s *Spec) { s.HeavySources = 0 }},
	} {
		s := DefaultSpec
		c.mod(&s)
		if err := s.Write(&bytes.Buffer{}, 10, 1); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
	if err := Write(&bytes.Buffer{}, -1, 1); err == nil {
		t.Error("n = -1: no error")
	}
}

// listed is an entry as `conntrack -L` shows it, read with plain field
// splitting (not ctdoctor's parser).
type listed struct{ state, flags string }

func parseListing(t *testing.T, text string) map[string]listed {
	t.Helper()
	out := map[string]listed{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		var l listed
		kv := map[string]string{}
		for _, x := range f[3:] {
			switch {
			case x == "[ASSURED]" || x == "[UNREPLIED]":
				l.flags += x
			case strings.Contains(x, "="):
				k, v, _ := strings.Cut(x, "=")
				if _, dup := kv[k]; !dup { // the first (original) tuple
					kv[k] = v
				}
			case f[0] == "tcp":
				l.state = x
			}
		}
		k := fmt.Sprintf("%s %s %s %s %s %s", f[0], kv["src"], kv["dst"], kv["sport"], kv["dport"], kv["id"])
		out[k] = l
	}
	return out
}

// TestKernelLoadsEveryLine loads a table into a namespace with
// `conntrack -R` and reads it back with `conntrack -L`: every line is
// accepted, and every entry has the state and flags the generator meant.
func TestKernelLoadsEveryLine(t *testing.T) {
	ns := nstest.New(t, "conntrack")
	const n = 5000
	path := filepath.Join(t.TempDir(), "flows.txt")
	if err := WriteFile(path, n, 3); err != nil {
		t.Fatal(err)
	}
	ns.LoadFlows(path)
	if c := strings.TrimSpace(ns.Run("conntrack", "-C")); c != fmt.Sprint(n) {
		t.Fatalf("conntrack -C = %s after loading %d lines", c, n)
	}
	got := parseListing(t, ns.Run("conntrack", "-L"))
	if len(got) != n {
		t.Fatalf("conntrack -L lists %d entries, want %d", len(got), n)
	}
	bad := 0
	for _, e := range entries(t, n, 3) {
		port := func(p uint16) string {
			if e.Proto == "icmp" {
				return ""
			}
			return fmt.Sprint(p)
		}
		id := ""
		if e.Proto == "icmp" {
			id = fmt.Sprint(e.ICMPID)
		}
		k := fmt.Sprintf("%s %v %v %s %s %s", e.Proto, e.Src, e.Dst, port(e.SrcPort), port(e.DstPort), id)
		want := listed{state: e.State}
		if e.Assured {
			want.flags += "[ASSURED]"
		}
		if !e.Replied {
			want.flags = "[UNREPLIED]" + want.flags
		}
		if l, ok := got[k]; !ok || l != want {
			if bad++; bad <= 5 {
				t.Errorf("%s: conntrack -L shows %+v (present %v), want %+v", k, l, ok, want)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d entries differ", bad, n)
	}
}
