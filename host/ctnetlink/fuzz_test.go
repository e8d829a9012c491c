package ctnetlink

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"golang.org/x/sys/unix"
)

// fuzzDecode runs a datagram through every decoder the package has: the
// dump path (as if it answered the first message's request), and each
// message through the flow, stats and control decoders.
func fuzzDecode(b []byte) {
	var seq, pid uint32
	if len(b) >= nlmsgHdrLen {
		seq, pid = binary.NativeEndian.Uint32(b[8:]), binary.NativeEndian.Uint32(b[12:])
	}
	var out []byte
	d := decoder{now: 1_700_000_000}
	s := dumpState{seq: seq, pid: pid, dec: &d, fn: func(f *conntrack.Flow) error {
		out = f.AppendConntrack(out[:0])
		out = f.AppendProc(out[:0])
		_ = f.NAT()
		return nil
	}}
	s.datagram(b)
	_ = endsDump(b, seq, pid)
	var f conntrack.Flow
	for len(b) > 0 {
		h, p, rest, err := nextMsg(b)
		if err != nil {
			return
		}
		b = rest
		_, _, _ = control(h, p, "fuzz")
		if d.flow(&f, p) == nil {
			out = f.AppendConntrack(out[:0])
		}
		var st conntrack.Stats
		_, _ = statsCPU(&st, p)
		_, _, _, _, _ = statsGlobal(p)
	}
}

func FuzzDecode(f *testing.F) {
	// Hand-made seeds; real captures are in testdata/fuzz/FuzzDecode.
	f.Add(tcpFlow(1, 2))
	f.Add(concat(tcpFlow(1, 2), tcpFlow(1, 2), ctrlmsg(unix.NLMSG_DONE, 1, 2, 0)))
	f.Add(ctrlmsg(unix.NLMSG_ERROR, 1, 2, -int32(unix.EPERM)))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzDecode(b)
	})
}

// TestCaptureFuzzCorpus writes real kernel answers into
// testdata/fuzz/FuzzDecode when CTDTEST_CAPTURE=1 (root, for maintainers).
func TestCaptureFuzzCorpus(t *testing.T) {
	if os.Getenv("CTDTEST_CAPTURE") != "1" {
		t.Skip("skipped: set CTDTEST_CAPTURE=1 to recapture the fuzz seed corpus")
	}
	ns := newNS(t)
	ns.Run("sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1", "net.netfilter.nf_conntrack_timestamp=1")
	loadVariety(t, ns, true)
	c, err := Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	capture := func(msg, flags uint16) [][]byte {
		seq, err := c.request(msg, flags, unix.AF_UNSPEC)
		if err != nil {
			t.Fatal(err)
		}
		r := receiver{fd: c.fd}
		buf := make([]byte, recvBufSize)
		var dgs [][]byte
		for {
			n, err := r.recv(buf, "capture")
			if err != nil {
				t.Fatal(err)
			}
			dgs = append(dgs, append([]byte(nil), buf[:n]...))
			h, _, _, _ := nextMsg(buf[:n])
			if endsDump(buf[:n], seq, c.portID) || (h.typ>>8 == nfnlSubsysCTNetlink && flags&unix.NLM_F_DUMP == 0 && len(dgs) > 1) {
				return dgs
			}
		}
	}
	dump := capture(ipctnlMsgCtGet, unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	all := concat(dump...)
	write("dump-variety", all)
	// One seed per entry, so the fuzzer mutates single messages too.
	b := all
	for i := 0; len(b) > 0; i++ {
		h, _, rest, err := nextMsg(b)
		if err != nil {
			t.Fatal(err)
		}
		write(fmt.Sprintf("msg-%02d", i), b[:h.len])
		b = rest
	}
	write("stats-cpu", concat(capture(ipctnlMsgCtGetStatsCPU, unix.NLM_F_REQUEST|unix.NLM_F_DUMP)...))
	write("stats-global", concat(capture(ipctnlMsgCtGetStats, unix.NLM_F_REQUEST|unix.NLM_F_ACK)...))
}
