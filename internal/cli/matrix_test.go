package cli

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// The server's address on the veth pair and the client's (TEST-NET-1: both
// ends live in namespaces the test creates, never on the host).
const (
	matrixServerIP = "192.0.2.1"
	matrixClientIP = "192.0.2.2"
)

// matrixNft is a stateful drop-policy firewall: replies accepted, new
// connections to 80 and 8081, DNS and ping accepted, everything else
// (9999 among it, though something listens there) dropped.
const matrixNft = `table inet fw {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		tcp dport { 80, 8081 } ct state new accept
		udp dport 53 accept
		icmp type echo-request accept
	}
}
`

// matrixIptables is the same firewall written for iptables.
const matrixIptables = `*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m multiport --dports 80,8081 -m conntrack --ctstate NEW -j ACCEPT
-A INPUT -p udp -m udp --dport 53 -j ACCEPT
-A INPUT -p icmp -m icmp --icmp-type 8 -j ACCEPT
COMMIT
`

// connectVeth joins two namespaces with a veth pair (created inside a,
// so no interface ever appears on the host) and addresses its ends. The
// pair goes away with the namespaces.
func connectVeth(t *testing.T, a, b *nstest.NS, aIP, bIP string) {
	t.Helper()
	for _, args := range [][]string{
		{"-n", a.Name, "link", "add", "ctd0", "type", "veth", "peer", "name", "ctd1", "netns", b.Name},
		{"-n", a.Name, "addr", "add", aIP + "/24", "dev", "ctd0"},
		{"-n", b.Name, "addr", "add", bIP + "/24", "dev", "ctd1"},
		{"-n", a.Name, "link", "set", "ctd0", "up"},
		{"-n", b.Name, "link", "set", "ctd1", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
}

// serveEcho listens on network/addr inside the namespace (the socket is
// made on a thread in it) and answers until the test ends: UDP datagrams
// are echoed, TCP connections get "hello\n" and are closed.
func serveEcho(t *testing.T, ns *nstest.NS, network, addr string) {
	t.Helper()
	var closer interface{ Close() error }
	err := ns.Do(func() error {
		if network == "udp" {
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return err
			}
			closer = pc
			go func() {
				buf := make([]byte, 1500)
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					_, _ = pc.WriteTo(buf[:n], from)
				}
			}()
			return nil
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		closer = l
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte("hello\n"))
				c.Close()
			}
		}()
		return nil
	})
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns.Name, err)
	}
	t.Cleanup(func() { closer.Close() })
}

// Verdicts of a probe.
const (
	verdictOK      = "ok"
	verdictRefused = "refused"
	verdictTimeout = "timeout"
)

const probeTimeout = 1500 * time.Millisecond

// classify turns a connection error into a verdict.
func classify(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return verdictOK
	case errors.Is(err, syscall.ECONNREFUSED):
		return verdictRefused
	case errors.As(err, &ne) && ne.Timeout():
		return verdictTimeout
	}
	return "error: " + err.Error()
}

// probeTCP connects from the namespace to addr: ok when the connection is
// made and, with http, the answer is HTTP 200 (any other answer is the
// status line).
func probeTCP(ns *nstest.NS, addr string, http bool) string {
	v := ""
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, probeTimeout)
		if err != nil {
			v = classify(err)
			return nil
		}
		defer c.Close()
		if !http {
			v = verdictOK
			return nil
		}
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("GET / HTTP/1.0\r\nHost: probe\r\n\r\n")); err != nil {
			v = classify(err)
			return nil
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		switch line, _, _ := strings.Cut(string(buf[:n]), "\r\n"); {
		case strings.HasPrefix(line, "HTTP/1.1 200"):
			v = verdictOK
		case err != nil:
			v = classify(err)
		default:
			v = "answer " + line
		}
		return nil
	})
	if err != nil {
		return "error: " + err.Error()
	}
	return v
}

// probeUDP sends a datagram from the namespace to addr and waits for the echo.
func probeUDP(ns *nstest.NS, addr string) string {
	v := ""
	err := ns.Do(func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			v = classify(err)
			return nil
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(probeTimeout))
		if _, err := c.Write([]byte("probe")); err != nil {
			v = classify(err)
			return nil
		}
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		switch {
		case err != nil:
			v = classify(err)
		case string(buf[:n]) == "probe":
			v = verdictOK
		default:
			v = fmt.Sprintf("answer %q", buf[:n])
		}
		return nil
	})
	if err != nil {
		return "error: " + err.Error()
	}
	return v
}

// probePing sends one ICMP echo request from the namespace.
func probePing(ns *nstest.NS, ip string) string {
	if _, err := ns.Output("ping", "-n", "-c", "1", "-W", "2", ip); err != nil {
		return verdictTimeout
	}
	return verdictOK
}

// clientEntries lists the server's conntrack entries of the client's
// connections to port 80.
func clientEntries(server *nstest.NS) string {
	return server.Run("conntrack", "-L", "-p", "tcp", "--orig-src", matrixClientIP, "--orig-port-dst", "80")
}

var counterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// listRuleset is the namespace's nft list ruleset with the packet counters
// of iptables-nft rules zeroed (traffic changes them, not ctdoctor).
func listRuleset(ns *nstest.NS) string {
	return counterRE.ReplaceAllString(ns.Run("nft", "list", "ruleset"), "counter packets 0 bytes 0")
}

// matrixProbe is one line of the traffic matrix and the verdict the
// firewall gives it.
type matrixProbe struct {
	name, want string
	run        func() string
	// defect, when set, names a known planner defect that makes the probe
	// give another verdict after apply: the difference is logged, not
	// failed; once the verdict holds again the test fails until the marker
	// is removed.
	defect string
}

// matrix runs every probe and returns the verdicts by name.
func matrix(probes []matrixProbe) map[string]string {
	got := map[string]string{}
	for _, p := range probes {
		got[p.name] = p.run()
	}
	return got
}

// matrixSetup is a server namespace behind the firewall with nginx on
// port 80 (every address) to a loopback upstream on 8081, UDP echo on
// 53, listeners on the denied 9999 (TCP and UDP), and a client namespace
// joined to it by a veth pair. It returns the namespaces and the probes.
func matrixSetup(t *testing.T, firewall string) (server, client *nstest.NS, probes []matrixProbe) {
	t.Helper()
	server = nstest.New(t, "nft", "conntrack", "nginx", "curl", "wrk", "ping", "iptables-nft-restore")
	client = nstest.New(t)
	connectVeth(t, server, client, matrixServerIP, matrixClientIP)
	switch firewall {
	case "nft":
		server.Nft(matrixNft)
	case "iptables-nft":
		cmd := exec.Command("ip", "netns", "exec", server.Name, "iptables-nft-restore")
		cmd.Stdin = strings.NewReader(matrixIptables)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("iptables-nft-restore: %v: %s", err, out)
		}
	default:
		t.Fatalf("firewall %q", firewall)
	}
	server.StartNginxOn("80")
	serveEcho(t, server, "udp", ":53")
	serveEcho(t, server, "tcp", ":9999")
	serveEcho(t, server, "udp", ":9999")
	srv := func(port int) string { return fmt.Sprintf("%s:%d", matrixServerIP, port) }
	probes = []matrixProbe{
		{"client → tcp/80 (nginx, allowed)", verdictOK, func() string { return probeTCP(client, srv(80), true) }, ""},
		{"client → tcp/8081 (allowed, nothing listens on the veth)", verdictRefused, func() string { return probeTCP(client, srv(8081), false) }, ""},
		{"client → tcp/9999 (denied, a listener exists)", verdictTimeout, func() string { return probeTCP(client, srv(9999), false) }, ""},
		{"client → udp/53 (allowed)", verdictOK, func() string { return probeUDP(client, srv(53)) }, ""},
		{"client → udp/9999 (denied, a listener exists)", verdictTimeout, func() string { return probeUDP(client, srv(9999)) }, ""},
		{"client → icmp echo (allowed)", verdictOK, func() string { return probePing(client, matrixServerIP) }, ""},
		{"server loopback → tcp/80 (nginx → upstream 8081, allowed)", verdictOK, func() string { return probeTCP(server, "127.0.0.1:80", true) }, ""},
		{"server loopback → tcp/9999 (denied)", verdictTimeout, func() string { return probeTCP(server, "127.0.0.1:9999", false) }, ""},
	}
	return server, client, probes
}

// checkMatrix fails the test when a verdict is not the expected one
// (applied: after apply, where a probe's known defect is logged instead),
// and returns the verdicts.
func checkMatrix(t *testing.T, when string, probes []matrixProbe, applied bool) map[string]string {
	t.Helper()
	got := matrix(probes)
	var b strings.Builder
	for _, p := range probes {
		mark := "  "
		switch {
		case got[p.name] == p.want && applied && p.defect != "":
			t.Errorf("%s: %s: %s as expected: the known defect (%s) is gone, remove its marker", when, p.name, got[p.name], p.defect)
		case got[p.name] == p.want:
		case applied && p.defect != "":
			mark = "! "
			t.Logf("KNOWN DEFECT %s: %s: %s, want %s: %s", when, p.name, got[p.name], p.want, p.defect)
		default:
			mark = "✗ "
			t.Errorf("%s: %s: %s, want %s", when, p.name, got[p.name], p.want)
		}
		fmt.Fprintf(&b, "\n  %s%-62s %s", mark, p.name, got[p.name])
	}
	t.Logf("%s:%s", when, b.String())
	return got
}

// The traffic matrix: a stateful drop-policy firewall (nft, and the same
// rules through iptables-nft) in front of nginx with a loopback upstream,
// DNS on UDP 53 and listeners on a denied port, probed from a second
// namespace over veth and on loopback. The load makes the plan stop
// tracking loopback (and, with load from the client, port 80 too); every
// probe gives the same verdict — the expected one — before `ctdoctor
// apply`, after it, and after `ctdoctor rollback`, which also restores the
// ruleset byte for byte.
func TestTrafficMatrix(t *testing.T) {
	for _, tc := range []struct {
		name, firewall string
		clientLoad     bool // short connections from the client to port 80 as well
	}{
		{"nft loopback load", "nft", false},
		{"nft client load", "nft", true},
		{"iptables-nft client load", "iptables-nft", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server, client, probes := matrixSetup(t, tc.firewall)
			before := checkMatrix(t, "before apply", probes, false)
			ruleset := listRuleset(server)

			// Short connections: on loopback only, or from the client only
			// (each request then makes one entry for port 80 from the client
			// and one for the upstream on loopback: half the table each).
			if tc.clientLoad {
				client.Run("wrk", "-t", "1", "-c", "8", "-d", "2s", "-H", "Connection: close", "http://"+matrixServerIP+"/")
				if out := clientEntries(server); !strings.Contains(out, "dport=80") {
					t.Fatalf("the client's connections to port 80 are not tracked before apply:\n%s", out)
				}
			} else {
				server.Run("wrk", "-t", "1", "-c", "8", "-d", "2s", "-H", "Connection: close", "http://127.0.0.1/")
			}
			p := planJSON(t, "--netns", server.Name, "--interval", "0", "--no-predict")
			var loNotrack, port80 bool
			for _, s := range p.Applicable() {
				if s.Notrack != nil {
					loNotrack = loNotrack || s.Notrack.Loopback
					port80 = port80 || s.Notrack.Proto == "tcp" && s.Notrack.Port == 80
				}
			}
			if !loNotrack {
				t.Fatalf("the plan does not stop tracking loopback: %+v (skipped %+v)", p.Steps, p.Skipped)
			}
			for _, s := range p.Applicable() {
				t.Logf("planned: %s\n\t%s", s.Title, strings.Join(s.Commands, "\n\t"))
			}
			for _, s := range p.Skipped {
				t.Logf("not planned: %s: %s", s.What, s.Reason)
			}
			t.Logf("NOTRACK for tcp/80 planned: %v", port80)
			if tc.clientLoad && !port80 {
				found := false
				for _, s := range p.Skipped {
					found = found || s.What == "stop tracking tcp port 80" && s.Reason != ""
				}
				if !found {
					t.Errorf("client load on port 80: NOTRACK for it neither planned nor refused with a reason: %+v", p.Skipped)
				}
			}

			state := t.TempDir()
			if out := run(t, "apply", "--netns", server.Name, "--yes", "--state-dir", state); !strings.Contains(out, "Applied and verified") {
				t.Fatalf("apply:\n%s", out)
			}
			// The apply did what it says: loopback is no longer tracked.
			server.Run("conntrack", "-F")
			if v := probeTCP(server, "127.0.0.1:80", true); v != verdictOK {
				t.Fatalf("loopback request after apply: %s", v)
			}
			if n := server.LoopbackEntries(80, 8081); n != 0 {
				t.Errorf("%d loopback entries after apply, want 0", n)
			}
			if port80 {
				if v := probeTCP(client, matrixServerIP+":80", true); v != verdictOK {
					t.Fatalf("client request after apply: %s", v)
				}
				if out := clientEntries(server); strings.Contains(out, "dport=80") {
					t.Errorf("the client's connection to port 80 is still tracked after apply:\n%s", out)
				}
			}
			after := checkMatrix(t, "after apply", probes, true)

			run(t, "rollback", "--state-dir", state)
			if got := listRuleset(server); got != ruleset {
				t.Errorf("ruleset after rollback:\n%s\nwant:\n%s", got, ruleset)
			}
			rolled := checkMatrix(t, "after rollback", probes, false)
			for _, pr := range probes {
				if pr.defect != "" {
					after[pr.name] = before[pr.name] // logged above
				}
				if before[pr.name] != after[pr.name] || before[pr.name] != rolled[pr.name] {
					t.Errorf("%s: %s before, %s after apply, %s after rollback", pr.name, before[pr.name], after[pr.name], rolled[pr.name])
				}
			}
		})
	}
}
