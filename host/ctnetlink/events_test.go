package ctnetlink

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/internal/nstest"
	"golang.org/x/sys/unix"
)

const ctDelete = nfnlSubsysCTNetlink<<8 | ipctnlMsgCtDelete

// eventMsgs are the three kinds of event message as the kernel sends
// them (sequence number and port 0): a TCP entry's new event, an update
// that changes its state, an update that only sets a status bit (no
// CTA_PROTOINFO), and its destroy event (no CTA_PROTOINFO, counters).
func eventMsgs() (newMsg, stateUpd, statusUpd, destroy []byte) {
	orig := nest(ctaTupleOrig, tuple4("10.0.0.1", "10.0.0.2", 6, 1000, 80))
	reply := nest(ctaTupleReply, tuple4("10.0.0.2", "10.0.0.1", 6, 80, 1000))
	id := attr(ctaID, be32(77))
	newMsg = nlmsg(ctNew, unix.NLM_F_CREATE|unix.NLM_F_EXCL, 0, 0, unix.AF_INET, 0, orig, reply,
		attr(ctaStatus, be32(uint32(conntrack.StatusConfirmed))), attr(ctaTimeout, be32(120)),
		nest(ctaProtoinfo, nest(ctaProtoinfoTCP, attr(ctaProtoinfoState, []byte{uint8(conntrack.TCPSynSent)}))), id)
	stateUpd = nlmsg(ctNew, 0, 0, 0, unix.AF_INET, 0, orig, reply,
		attr(ctaStatus, be32(uint32(conntrack.StatusConfirmed|conntrack.StatusSeenReply))), attr(ctaTimeout, be32(60)),
		nest(ctaProtoinfo, nest(ctaProtoinfoTCP, attr(ctaProtoinfoState, []byte{uint8(conntrack.TCPEstablished)}))), id)
	statusUpd = nlmsg(ctNew, 0, 0, 0, unix.AF_INET, 0, orig, reply,
		attr(ctaStatus, be32(uint32(conntrack.StatusConfirmed|conntrack.StatusSeenReply|conntrack.StatusAssured))), id)
	destroy = nlmsg(ctDelete, 0, 0, 0, unix.AF_INET, 0, orig, reply,
		attr(ctaStatus, be32(uint32(conntrack.StatusConfirmed|conntrack.StatusSeenReply|conntrack.StatusAssured))), id,
		nest(ctaCountersOrig, attr(ctaCountersPackets, be64(5)), attr(ctaCountersBytes, be64(300))))
	return
}

type seenEvent struct {
	typ      EventType
	hasState bool
	state    uint8
	id       uint32
	line     string
}

func collect(out *[]seenEvent) func(*Event) {
	return func(e *Event) {
		*out = append(*out, seenEvent{e.Type, e.HasState, e.Flow.State, e.Flow.ID, strings.TrimSpace(string(e.Flow.AppendConntrack(nil)))})
	}
}

// The message type and flags make the event type: CT_NEW with
// NLM_F_CREATE|NLM_F_EXCL is new, without them an update, CT_DELETE a
// destroy; only messages with CTA_PROTOINFO say the state. Control
// messages and other subsystems' messages are no events.
func TestDecodeEvents(t *testing.T) {
	newMsg, stateUpd, statusUpd, destroy := eventMsgs()
	exp := nlmsg(2<<8, unix.NLM_F_CREATE, 0, 0, unix.AF_INET, 0, attr(1, be32(1))) // NFNL_SUBSYS_CTNETLINK_EXP
	b := concat(newMsg, ctrlmsg(unix.NLMSG_NOOP, 0, 0, 0), stateUpd, exp, statusUpd, destroy)
	var got []seenEvent
	var d decoder
	var ev Event
	n, err := decodeEvents(b, &d, &ev, collect(&got))
	if err != nil || n != 4 {
		t.Fatalf("decodeEvents = %d, %v; want 4 events", n, err)
	}
	want := []seenEvent{
		{EventNew, true, uint8(conntrack.TCPSynSent), 77, ""},
		{EventUpdate, true, uint8(conntrack.TCPEstablished), 77, ""},
		{EventUpdate, false, 0, 77, ""},
		{EventDestroy, false, 0, 77, ""},
	}
	for i := range want {
		g := got[i]
		g.line = ""
		if g != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if !strings.Contains(got[3].line, "src=10.0.0.1 dst=10.0.0.2 sport=1000 dport=80 packets=5 bytes=300") {
		t.Errorf("destroy event decoded as %q", got[3].line)
	}
	if EventNew.String() != "new" || EventUpdate.String() != "update" || EventDestroy.String() != "destroy" || EventType(9).String() != "EventType(9)" {
		t.Error("EventType.String")
	}
}

// A malformed message ends the batch with an error after the events
// before it; a kernel error message is an error too.
func TestDecodeEventsMalformed(t *testing.T) {
	newMsg, _, _, _ := eventMsgs()
	bad := nlmsg(ctNew, 0, 0, 0, unix.AF_INET, 0, attr(ctaID, []byte{1, 2})) // 2-byte CTA_ID
	var got []seenEvent
	var d decoder
	var ev Event
	n, err := decodeEvents(concat(newMsg, bad, newMsg), &d, &ev, collect(&got))
	if n != 1 || !errors.Is(err, errMalformed) || !strings.Contains(err.Error(), "update event") {
		t.Errorf("decodeEvents = %d, %v; want 1 event then a malformed update", n, err)
	}
	n, err = decodeEvents(newMsg[:30], &d, &ev, collect(&got))
	if n != 0 || !errors.Is(err, errMalformed) {
		t.Errorf("truncated: %d, %v", n, err)
	}
	n, err = decodeEvents(ctrlmsg(unix.NLMSG_ERROR, 0, 0, -int32(unix.ENOBUFS)), &d, &ev, collect(&got))
	if n != 0 || !errors.Is(err, unix.ENOBUFS) {
		t.Errorf("error message: %d, %v", n, err)
	}
}

func TestOpenEventsBadOptions(t *testing.T) {
	if _, err := OpenEvents("", EventOptions{Types: []EventType{4}}); err == nil {
		t.Error("event type 4 accepted")
	}
	if _, err := OpenEvents("", EventOptions{ReadBuffer: -1}); err == nil {
		t.Error("negative buffer accepted")
	}
	if _, err := OpenEvents("/proc/self/status", EventOptions{}); err == nil || !strings.Contains(err.Error(), "not a namespace file") {
		t.Errorf("a plain file as namespace: %v", err)
	}
}

// readUntil reads events until cond holds for what was read (failing
// after a generous deadline: the machine may be loaded).
func readUntil(t *testing.T, e *Events, got *[]seenEvent, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("events so far: %+v", *got)
		}
		if err := e.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Read(collect(got)); err != nil && !errors.Is(err, ErrTimeout) {
			t.Fatalf("Read: %v", err)
		}
	}
}

// idOf returns the ID conntrack -L -o id prints for the entry matching sel.
func idOf(t *testing.T, ns *nstest.NS, sel ...string) uint32 {
	t.Helper()
	out := ns.Run("conntrack", append([]string{"-L", "-o", "id"}, sel...)...)
	for _, f := range strings.Fields(out) {
		if v, ok := strings.CutPrefix(f, "id="); ok {
			id, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				t.Fatal(err)
			}
			return uint32(id)
		}
	}
	t.Fatalf("no id in %q", out)
	return 0
}

// The kernel's events, checked against conntrack-tools: an entry made
// with conntrack -I sends a new event with the ID conntrack -L prints and
// its state, a mark change an update, conntrack -D a destroy event with
// the same ID, and a real connection's state changes updates with the
// state.
func TestEventsFromKernel(t *testing.T) {
	ns := newNS(t)
	e, err := OpenEvents(ns.Path(), EventOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if n, err := e.ReadBuffer(); err != nil || n < DefaultEventBuffer {
		t.Errorf("receive buffer %d (%v), want at least %d", n, err, DefaultEventBuffer)
	}
	sel := []string{"-p", "tcp", "-s", "10.9.0.1", "-d", "10.9.0.2", "--sport", "1000", "--dport", "80"}
	ns.Run("conntrack", append(append([]string{"-I"}, sel...), "--state", "SYN_SENT", "-t", "100")...)
	id := idOf(t, ns, sel...)
	var got []seenEvent
	readUntil(t, e, &got, func() bool { return len(got) >= 1 })
	if g := got[0]; g.typ != EventNew || g.id != id || !g.hasState || conntrack.TCPState(g.state) != conntrack.TCPSynSent {
		t.Errorf("after conntrack -I: %+v, want a new SYN_SENT event with id %d", g, id)
	}
	ns.Run("conntrack", append(append([]string{"-U"}, sel...), "--mark", "5")...)
	readUntil(t, e, &got, func() bool { return len(got) >= 2 })
	if g := got[1]; g.typ != EventUpdate || g.id != id || !strings.Contains(g.line, "mark=5") {
		t.Errorf("after conntrack -U --mark: %+v, want an update with mark=5", g)
	}
	ns.Run("conntrack", append([]string{"-D"}, sel...)...)
	readUntil(t, e, &got, func() bool { return len(got) >= 3 })
	if g := got[2]; g.typ != EventDestroy || g.id != id {
		t.Errorf("after conntrack -D: %+v, want a destroy event with id %d", g, id)
	}

	// A real connection: its state changes arrive as updates with the
	// state, in the order the kernel tracked them.
	ns.Track()
	got = got[:0]
	if err := ns.Do(func() error { return loopbackConnection(9000) }); err != nil {
		t.Fatal(err)
	}
	hasState := func(s conntrack.TCPState) bool {
		for _, g := range got {
			if g.typ == EventUpdate && g.hasState && conntrack.TCPState(g.state) == s {
				return true
			}
		}
		return false
	}
	readUntil(t, e, &got, func() bool { return hasState(conntrack.TCPTimeWait) })
	if got[0].typ != EventNew || conntrack.TCPState(got[0].state) != conntrack.TCPSynSent {
		t.Errorf("a connection: first event %+v, want new SYN_SENT", got[0])
	}
	for _, s := range []conntrack.TCPState{conntrack.TCPSynRecv, conntrack.TCPEstablished} {
		if !hasState(s) {
			t.Errorf("no update to %s: %+v", s, got)
		}
	}
}

// loopbackConnection makes one TCP connection to 127.0.0.1:port on the
// calling thread's namespace, closed by the client first.
func loopbackConnection(port int) error {
	l, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(l)
	_ = unix.SetsockoptInt(l, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	addr := &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
	if err := unix.Bind(l, addr); err != nil {
		return err
	}
	if err := unix.Listen(l, 1); err != nil {
		return err
	}
	c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	if err := unix.Connect(c, addr); err != nil {
		unix.Close(c)
		return err
	}
	s, _, err := unix.Accept(l)
	if err != nil {
		unix.Close(c)
		return err
	}
	unix.Close(c)
	var b [1]byte
	_, _ = unix.Read(s, b[:]) // the client's FIN
	return unix.Close(s)
}

// A receive buffer too small for a burst: the kernel drops events, Read
// says so with ErrEventsLost, and the socket goes on delivering the
// events after the loss.
func TestEventsLost(t *testing.T) {
	ns := newNS(t)
	e, err := OpenEvents(ns.Path(), EventOptions{ReadBuffer: 1}) // the kernel's minimum
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	file := filepath.Join(t.TempDir(), "flows.txt")
	var b strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&b, "-I -p udp -s 10.8.%d.%d -d 10.9.0.1 --sport 1000 --dport 53 -t 600\n", i>>8, i&255)
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.LoadFlows(file) // 2000 new events while nobody reads
	var got []seenEvent
	var lost error
	for i := 0; i < 100 && lost == nil; i++ {
		if err := e.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		_, err := e.Read(collect(&got))
		switch {
		case errors.Is(err, ErrEventsLost):
			lost = err
		case errors.Is(err, ErrTimeout):
			t.Fatalf("no loss reported after %d events of 2000 with the smallest buffer", len(got))
		case err != nil:
			t.Fatal(err)
		}
	}
	if lost == nil || !errors.Is(lost, unix.ENOBUFS) {
		t.Fatalf("lost = %v, want ErrEventsLost wrapping ENOBUFS", lost)
	}
	t.Logf("%d events read before: %v", len(got), lost)
	// Drain what is left, then one more entry: its event arrives.
	for {
		if err := e.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Read(func(*Event) {}); errors.Is(err, ErrTimeout) {
			break
		}
	}
	ns.Run("conntrack", "-I", "-p", "udp", "-s", "10.7.0.1", "-d", "10.9.0.1", "--sport", "1", "--dport", "53", "-t", "600")
	got = got[:0]
	readUntil(t, e, &got, func() bool { return len(got) > 0 })
	if got[0].typ != EventNew || !strings.Contains(got[0].line, "src=10.7.0.1") {
		t.Errorf("after the loss: %+v", got[0])
	}
}

// Close ends a Read that waits, which then returns ErrClosed; a deadline
// ends one with ErrTimeout.
func TestEventsCloseEndsRead(t *testing.T) {
	ns := newNS(t)
	e, err := OpenEvents(ns.Path(), EventOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Read(func(*Event) {}); !errors.Is(err, ErrTimeout) {
		t.Errorf("Read past the deadline = %v, want ErrTimeout", err)
	}
	if err := e.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.Read(func(*Event) {})
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != ErrClosed {
			t.Errorf("Read after Close = %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the Read")
	}
	if err := e.Close(); err != ErrClosed {
		t.Errorf("second Close = %v", err)
	}
}

// TestEventsPermissionDenied subscribes as nobody inside a test
// namespace: the error wraps ErrPermission and names CAP_NET_ADMIN.
func TestEventsPermissionDenied(t *testing.T) {
	runHelperAsNobody(t, "TestEventsPermissionHelper")
}

func TestEventsPermissionHelper(t *testing.T) {
	if os.Getenv("CTDTEST_PERMISSION_HELPER") != "1" {
		t.Skip("skipped: helper process of TestEventsPermissionDenied")
	}
	if os.Geteuid() == 0 {
		t.Fatal("helper runs as root")
	}
	e, err := OpenEvents("", EventOptions{})
	if err == nil {
		e.Close()
		t.Fatal("subscribed to conntrack events as nobody")
	}
	if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Errorf("OpenEvents as nobody = %v, want ErrPermission naming CAP_NET_ADMIN", err)
	}
	t.Logf("OpenEvents: %v", err)
}

// Where the kernel has no recvmmsg, events come one recvfrom each.
func TestEventsWithoutRecvmmsg(t *testing.T) {
	ns := newNS(t)
	e, err := OpenEvents(ns.Path(), EventOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.noMmsg = true
	for i := range 3 {
		ns.Run("conntrack", "-I", "-p", "udp", "-s", "10.9.0.1", "-d", "10.9.0.2", "--sport", strconv.Itoa(1000+i), "--dport", "53", "-t", "60")
	}
	var got []seenEvent
	readUntil(t, e, &got, func() bool { return len(got) >= 3 })
	for i, g := range got {
		if g.typ != EventNew || !strings.Contains(g.line, "sport="+strconv.Itoa(1000+i)) {
			t.Errorf("event %d: %+v", i, g)
		}
	}
}
