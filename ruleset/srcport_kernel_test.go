package ruleset

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/internal/nstest"
)

// A firewall that accepts new loopback connections to tcp/8080 only (and
// established, related), and drops the rest.
const (
	only8080Nft = `table inet fw {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		tcp dport 8080 ct state new accept
	}
}
`
	only8080Ipt = `*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 8080 -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`
)

// serveHello listens on addr in the namespace until the test ends and
// answers every connection with "hello\n".
func serveHello(t *testing.T, ns *nstest.NS, network, addr string) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	}); err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("hello\n"))
			_ = c.Close()
		}
	}()
}

// dialHello connects from local ("" for any address and port) to remote
// inside the namespace and reads the greeting. A connection the firewall
// drops times out after dialTimeout.
func dialHello(ns *nstest.NS, network, local, remote string) error {
	const dialTimeout = 3 * time.Second
	return ns.Do(func() error {
		d := net.Dialer{Timeout: dialTimeout}
		if local != "" {
			a, err := net.ResolveTCPAddr(network, local)
			if err != nil {
				return err
			}
			d.LocalAddr = a
		}
		c, err := d.Dial(network, remote)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("connected, but read: %w", err)
		}
		if line != "hello\n" {
			return fmt.Errorf("connected, but read %q", line)
		}
		return nil
	})
}

// isTimeout says whether a dial failed by timing out (a dropped SYN).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestKernelSourcePortOpensNoDeniedPort is the pitfall of a narrowed
// loopback plan: replies from an open port (8080) are untracked and
// accepted by their source port, so a local program that sends from
// 8080 — here from 127.0.0.2:8080, since the service holds 127.0.0.1:8080,
// and from [::1]:8080 — would reach a loopback port the firewall drops
// (9090, with a listener). With the plan applied, that connection must
// still time out as it does without the plan (its SYN stays tracked, meets
// the firewall's rules and is dropped), while a normal client of 8080
// works and leaves no entry in the table. For native nft and for iptables
// of both backends, with the NOTRACK rules in nft or in the iptables raw
// table.
func TestKernelSourcePortOpensNoDeniedPort(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend Backend // "" native nft
		noNft   bool    // NOTRACK in the iptables raw table
	}{
		{name: "nft"},
		{name: "iptables-legacy", backend: BackendIptablesLegacy},
		{name: "iptables-nft", backend: BackendIptablesNft},
		{name: "iptables-legacy raw", backend: BackendIptablesLegacy, noNft: true},
		{name: "iptables-nft raw", backend: BackendIptablesNft, noNft: true},
	} {
		t.Run(tc.name, func(t *testing.T) { testSourcePort(t, tc.backend, tc.noNft) })
	}
}

func testSourcePort(t *testing.T, backend Backend, noNft bool) {
	cmds := []string{"nft", "conntrack"}
	tool := string(backend)
	if backend != "" {
		cmds = append(cmds, tool, tool+"-restore", tool+"-save")
	}
	ns := nstest.New(t, cmds...)
	if backend == "" {
		ns.Nft(only8080Nft)
	} else {
		cmd := exec.Command("ip", "netns", "exec", ns.Name, tool+"-restore")
		cmd.Stdin = strings.NewReader(only8080Ipt)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s-restore: %v: %s", tool, err, out)
		}
	}
	ns.Run("ip", "addr", "add", "127.0.0.2/8", "dev", "lo")
	serveHello(t, ns, "tcp4", "127.0.0.1:8080")
	serveHello(t, ns, "tcp4", "127.0.0.1:9090")
	// IPv6: only native nft filters it here (the iptables cases load no
	// ip6tables rules, so IPv6 loopback is open to every port anyway).
	v6 := backend == ""
	if v6 {
		serveHello(t, ns, "tcp6", "[::1]:9090")
	}
	type attack struct{ network, from, to string }
	attacks := []attack{{"tcp4", "127.0.0.2:8080", "127.0.0.1:9090"}}
	if v6 {
		attacks = append(attacks, attack{"tcp6", "[::1]:8080", "[::1]:9090"})
	}
	check := func(when string) {
		t.Helper()
		if err := dialHello(ns, "tcp4", "", "127.0.0.1:8080"); err != nil {
			t.Fatalf("%s: a client of the open port 127.0.0.1:8080: %v", when, err)
		}
		for _, a := range attacks {
			err := dialHello(ns, a.network, a.from, a.to)
			if err == nil {
				t.Errorf("%s: a connection from %s (the open port as source port) to %s, a port the firewall drops, succeeded", when, a.from, a.to)
			} else if !isTimeout(err) {
				t.Errorf("%s: a connection from %s to %s: %v, want a timeout (the firewall drops it)", when, a.from, a.to, err)
			}
		}
	}
	check("before the plan")

	before := normalizeCounters(ns.Run("nft", "list", "ruleset"))
	rs, err := Read(context.Background(), Target{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	if noNft {
		rs.Tools.Nft = ""
	}
	p, err := PlanNotrack(rs, Loopback(), Target{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("plan:\n%s", strings.Join(p.Commands(), "\n"))
	ns.Run("conntrack", "-F")
	runPrinted(t, p.Commands())
	check("after the plan")

	// The client of 8080 left no entry; the attacker's SYNs from 8080
	// were tracked (and dropped).
	out := ns.Run("conntrack", "-L")
	for line := range strings.SplitSeq(out, "\n") {
		if strings.Contains(line, "dport=8080 ") && !strings.Contains(line, "sport=8080 dport=9090 ") {
			t.Errorf("after the plan: an entry for the client of 8080 (its traffic should be untracked):\n%s", line)
		}
	}
	if !strings.Contains(out, "src=127.0.0.2 dst=127.0.0.1 sport=8080 dport=9090 ") {
		t.Errorf("after the plan: no entry for the SYN from 127.0.0.2:8080 to 9090: it was not tracked\n%s", out)
	}

	rs2, err := Read(context.Background(), Target{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	if noNft {
		rs2.Tools.Nft = ""
	}
	if again, err := PlanNotrack(rs2, Loopback(), Target{NetNS: ns.Name}); err != nil || !again.Empty() {
		t.Errorf("a plan made after applying one should be empty, got %v %+v", err, again)
	}

	runPrinted(t, p.UndoCommands())
	if backend == "" {
		if after := normalizeCounters(ns.Run("nft", "list", "ruleset")); after != before {
			t.Errorf("undo did not restore the ruleset:\n--- before\n%s\n--- after\n%s", before, after)
		}
	}
	check("after undo")
}

// TestKernelPlanReloadedFromListing: an applied plan saved the way
// operators persist a firewall (nft list ruleset, iptables-save) and
// loaded back is recognised as done. nft lists the reply rules' flag
// condition back in its own form ("tcp flags != syn / syn,ack" in nft
// 1.0.x), iptables-save prints ! --syn as ! --tcp-flags FIN,SYN,RST,ACK
// SYN; both load back to the same rules, which still keep the attacker's
// connection from 8080 out.
func TestKernelPlanReloadedFromListing(t *testing.T) {
	t.Run("nft", func(t *testing.T) {
		ns := nstest.New(t, "nft", "conntrack")
		ns.Nft(only8080Nft)
		ns.Run("ip", "addr", "add", "127.0.0.2/8", "dev", "lo")
		serveHello(t, ns, "tcp4", "127.0.0.1:8080")
		serveHello(t, ns, "tcp4", "127.0.0.1:9090")
		_, p := readPlan(t, ns, Loopback())
		runPrinted(t, p.Commands())
		listing := ns.Run("nft", "list", "ruleset")
		if !strings.Contains(listing, "tcp flags != syn / syn,ack") && !strings.Contains(listing, "tcp flags & (syn | ack) != syn") {
			t.Fatalf("nft lists the reply rules without their flag condition:\n%s", listing)
		}
		ns.Run("nft", "flush", "ruleset")
		ns.Nft(listing)
		if again := ns.Run("nft", "list", "ruleset"); again != listing {
			t.Errorf("the listing did not load back as it was:\n--- listed\n%s\n--- loaded\n%s", listing, again)
		}
		if _, again := readPlan(t, ns, Loopback()); !again.Empty() {
			t.Errorf("the reloaded plan is not recognised: %s", strings.Join(again.Commands(), "\n"))
		}
		if err := dialHello(ns, "tcp4", "", "127.0.0.1:8080"); err != nil {
			t.Errorf("after reloading: a client of 8080: %v", err)
		}
		if err := dialHello(ns, "tcp4", "127.0.0.2:8080", "127.0.0.1:9090"); !isTimeout(err) {
			t.Errorf("after reloading: from 127.0.0.2:8080 to 9090: %v, want a timeout", err)
		}
	})
	t.Run("iptables-legacy raw", func(t *testing.T) {
		ns := nstest.New(t, "nft", "iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore")
		restore := func(text string) {
			t.Helper()
			cmd := exec.Command("ip", "netns", "exec", ns.Name, "iptables-legacy-restore")
			cmd.Stdin = strings.NewReader(text)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("iptables-legacy-restore: %v: %s", err, out)
			}
		}
		restore(only8080Ipt)
		rs, err := Read(context.Background(), Target{NetNS: ns.Name})
		if err != nil {
			t.Fatal(err)
		}
		rs.Tools.Nft = ""
		p, err := PlanNotrack(rs, Loopback(), Target{NetNS: ns.Name})
		if err != nil {
			t.Fatal(err)
		}
		runPrinted(t, p.Commands())
		saved := ns.Run("iptables-legacy-save")
		if !strings.Contains(saved, "--sport 8080 ! --tcp-flags FIN,SYN,RST,ACK SYN") {
			t.Fatalf("iptables-save lists the reply rules without their flag condition:\n%s", saved)
		}
		for _, tb := range []string{"filter", "raw"} {
			ns.Run("iptables-legacy", "-t", tb, "-F")
		}
		restore(saved)
		rs, err = Read(context.Background(), Target{NetNS: ns.Name})
		if err != nil {
			t.Fatal(err)
		}
		rs.Tools.Nft = ""
		if again, err := PlanNotrack(rs, Loopback(), Target{NetNS: ns.Name}); err != nil || hasCommand(again, "iptables-legacy ") {
			t.Errorf("the reloaded IPv4 rules are not recognised: %v %s", err, strings.Join(again.Commands(), "\n"))
		}
	})
}

// udpEcho answers every datagram to addr with the same bytes until the
// test ends.
func udpEcho(t *testing.T, ns *nstest.NS, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen on udp %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = pc.Close() })
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
}

// udpSink receives datagrams on addr until the test ends and passes
// their contents on.
func udpSink(t *testing.T, ns *nstest.NS, addr string) <-chan string {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen on udp %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	got := make(chan string, 16)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}
	}()
	return got
}

// udpSend sends msg from local to remote in the namespace and, with
// wantReply, waits for the answer.
func udpSend(ns *nstest.NS, local, remote, msg string, wantReply bool) (string, error) {
	var reply string
	err := ns.Do(func() error {
		la, err := net.ResolveUDPAddr("udp4", local)
		if err != nil {
			return err
		}
		ra, err := net.ResolveUDPAddr("udp4", remote)
		if err != nil {
			return err
		}
		c, err := net.DialUDP("udp4", la, ra)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		if !wantReply {
			return nil
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		reply = string(buf[:n])
		return err
	})
	return reply, err
}

// received says whether msg arrives at a sink within two seconds.
func received(got <-chan string, msg string) bool {
	deadline := time.After(2 * time.Second)
	for {
		select {
		case m := <-got:
			if m == msg {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// TestKernelUDPSourcePortStaysTracked: UDP has no flag that marks a new
// connection, so its replies can be told apart only by their source
// port. A firewall that accepts new loopback datagrams to udp/5353 (and
// tcp/8080) only: by default the plan leaves udp/5353 tracked (a program
// sending from 127.0.0.2:5353 to a dropped port, 9091, stays dropped, and
// the client of 5353 keeps working, tracked). Asked for explicitly
// (SourcePortReplies), udp/5353 is untracked, and then that program's
// datagram does reach 9091: the risk the default avoids. Read takes the
// namespace's own net.ipv4.ip_unprivileged_port_start.
func TestKernelUDPSourcePortStaysTracked(t *testing.T) {
	ns := nstest.New(t, "nft", "conntrack", "sysctl")
	ns.Nft(`table inet fw {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		tcp dport 8080 ct state new accept
		udp dport 5353 ct state new accept
	}
}
`)
	ns.Run("ip", "addr", "add", "127.0.0.2/8", "dev", "lo")
	udpEcho(t, ns, "127.0.0.1:5353")
	sink := udpSink(t, ns, "127.0.0.1:9091")
	n := 0
	check := func(when string, wantDelivered bool) {
		t.Helper()
		n++
		if reply, err := udpSend(ns, "127.0.0.1:0", "127.0.0.1:5353", "ping", true); err != nil || reply != "ping" {
			t.Fatalf("%s: the client of udp/5353: %q %v", when, reply, err)
		}
		msg := fmt.Sprintf("from 5353, %d", n)
		if _, err := udpSend(ns, "127.0.0.2:5353", "127.0.0.1:9091", msg, false); err != nil {
			t.Fatalf("%s: send from 127.0.0.2:5353: %v", when, err)
		}
		if got := received(sink, msg); got != wantDelivered {
			t.Errorf("%s: a datagram from 127.0.0.2:5353 to 127.0.0.1:9091 (dropped by the firewall) delivered: %v, want %v", when, got, wantDelivered)
		}
	}
	check("before the plan", false)

	rs, p := readPlan(t, ns, Loopback())
	if rs.UnprivilegedPortStart == nil || *rs.UnprivilegedPortStart != 1024 {
		t.Errorf("ip_unprivileged_port_start read as %v, want 1024 (the kernel's default)", rs.UnprivilegedPortStart)
	}
	if hasCommand(p, "5353") || !hasCommand(p, "tcp dport 8080") || !strings.Contains(strings.Join(p.Notes, "\n"), "udp/5353 stay tracked") {
		t.Fatalf("want tcp/8080 only, and a note on udp/5353:\n%s\n%q", strings.Join(p.Commands(), "\n"), p.Notes)
	}
	ns.Run("conntrack", "-F")
	runPrinted(t, p.Commands())
	check("after the plan", false)
	if !strings.Contains(ns.Run("conntrack", "-L"), "dport=5353 ") {
		t.Error("after the plan: no entry for udp/5353: it should stay tracked")
	}
	runPrinted(t, p.UndoCommands())

	sel := Loopback()
	sel.SourcePortReplies = true
	p2, err := PlanNotrack(rs, sel, Target{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	if !hasCommand(p2, `oif "lo" udp sport 5353 notrack`) {
		t.Fatalf("SourcePortReplies: want udp/5353 untracked:\n%s", strings.Join(p2.Commands(), "\n"))
	}
	ns.Run("conntrack", "-F")
	runPrinted(t, p2.Commands())
	check("with udp/5353 untracked by source port, as asked", true)
	runPrinted(t, p2.UndoCommands())
	check("after undo", false)

	ns.Run("sysctl", "-q", "-w", "net.ipv4.ip_unprivileged_port_start=0")
	rs, err = Read(context.Background(), Target{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	if rs.UnprivilegedPortStart == nil || *rs.UnprivilegedPortStart != 0 {
		t.Errorf("ip_unprivileged_port_start set to 0 in the namespace, read as %v", rs.UnprivilegedPortStart)
	}
}
