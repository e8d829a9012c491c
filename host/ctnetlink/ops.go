package ctnetlink

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"golang.org/x/sys/unix"
)

// header is a decoded struct nlmsghdr.
type header struct {
	len, seq, pid uint32
	typ, flags    uint16
}

// nextMsg splits the first netlink message off b.
func nextMsg(b []byte) (h header, payload, rest []byte, err error) {
	if len(b) < nlmsgHdrLen {
		return h, nil, nil, fmt.Errorf("%w: %d trailing bytes, too short for a message header", errMalformed, len(b))
	}
	ne := binary.NativeEndian
	h.len = ne.Uint32(b)
	if h.len < nlmsgHdrLen || h.len > uint32(len(b)) {
		return h, nil, nil, fmt.Errorf("%w: message length %d out of range %d..%d", errMalformed, h.len, nlmsgHdrLen, len(b))
	}
	h.typ = ne.Uint16(b[4:])
	h.flags = ne.Uint16(b[6:])
	h.seq = ne.Uint32(b[8:])
	h.pid = ne.Uint32(b[12:])
	next := int(h.len+3) &^ 3
	if next > len(b) {
		next = len(b)
	}
	return h, b[nlmsgHdrLen:h.len], b[next:], nil
}

// control interprets NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE and
// NLMSG_OVERRUN. It reports whether h was a control message and whether
// it ends the exchange (DONE, an ack, or an error).
func control(h header, p []byte, op string) (isControl, end bool, err error) {
	switch h.typ {
	case unix.NLMSG_NOOP:
		return true, false, nil
	case unix.NLMSG_ERROR:
		if len(p) < 4 {
			return true, true, fmt.Errorf("ctnetlink: %s: %w: %d-byte NLMSG_ERROR", op, errMalformed, len(p))
		}
		if e := int32(binary.NativeEndian.Uint32(p)); e != 0 {
			return true, true, errnoError(op, unix.Errno(-e))
		}
		return true, true, nil // ack
	case unix.NLMSG_DONE:
		// A dump that failed in the kernel carries its error here.
		if len(p) >= 4 {
			if e := int32(binary.NativeEndian.Uint32(p)); e < 0 {
				return true, true, errnoError(op, unix.Errno(-e))
			}
		}
		return true, true, nil
	case unix.NLMSG_OVERRUN:
		return true, true, fmt.Errorf("ctnetlink: %s: data lost (NLMSG_OVERRUN)", op)
	}
	return false, false, nil
}

// ctType returns the ctnetlink message number of a message type, or -1 for
// other subsystems.
func ctType(typ uint16) int {
	if typ>>8 != nfnlSubsysCTNetlink {
		return -1
	}
	return int(typ & 0xff)
}

// exchange sends a request and feeds every ctnetlink answer to handle until
// the kernel ends the exchange; it runs on the calling goroutine.
func (c *Conn) exchange(op string, msg, flags uint16, handle func(h header, p []byte) error) error {
	if c.fd < 0 {
		return ErrClosed
	}
	if c.broken != nil {
		return c.broken
	}
	seq, err := c.request(msg, flags, unix.AF_UNSPEC)
	if err != nil {
		return err
	}
	r := receiver{fd: c.fd}
	buf := c.buffers(1)[0]
	var herr error
	for {
		n, err := r.recv(buf, op)
		if err != nil {
			c.broken = fmt.Errorf("ctnetlink: connection unusable after a failed %s (%v); open a new one", op, err)
			return err
		}
		b := buf[:n]
		for len(b) > 0 {
			h, p, rest, err := nextMsg(b)
			if err != nil {
				c.broken = fmt.Errorf("ctnetlink: connection unusable after a failed %s (%v); open a new one", op, err)
				return fmt.Errorf("ctnetlink: %s: %w", op, err)
			}
			b = rest
			if h.seq != seq || h.pid != c.portID {
				continue
			}
			if isCtl, end, err := control(h, p, op); isCtl {
				if end {
					if herr != nil {
						return herr
					}
					return err
				}
				continue
			}
			if herr == nil {
				if err := handle(h, p); err != nil {
					herr = fmt.Errorf("ctnetlink: %s: %w", op, err)
				}
			}
		}
	}
}

// Stats returns the per-CPU counters (IPCTNL_MSG_CT_GET_STATS_CPU), all conntrack -S fields incl. clash_resolve, chaintoolong, with Present bits set for what the kernel sent.
//
// The slice is indexed by CPU number; CPUs the kernel did not report (not
// possible on this machine) are left with Present == 0.
func (c *Conn) Stats() ([]conntrack.Stats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []conntrack.Stats
	err := c.exchange("get per-CPU stats", ipctnlMsgCtGetStatsCPU, unix.NLM_F_REQUEST|unix.NLM_F_DUMP,
		func(h header, p []byte) error {
			if ctType(h.typ) != ipctnlMsgCtGetStatsCPU {
				return nil
			}
			var s conntrack.Stats
			cpu, err := statsCPU(&s, p)
			if err != nil {
				return err
			}
			for len(out) <= cpu {
				out = append(out, conntrack.Stats{})
			}
			out[cpu] = s
			return nil
		})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Count returns the namespace's entry count and the global max (IPCTNL_MSG_CT_GET_STATS: CTA_STATS_GLOBAL_ENTRIES / _MAX_ENTRIES).
func (c *Conn) Count() (count, max int64, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var got bool
	err = c.exchange("get global stats", ipctnlMsgCtGetStats, unix.NLM_F_REQUEST|unix.NLM_F_ACK,
		func(h header, p []byte) error {
			if ctType(h.typ) != ipctnlMsgCtGetStats {
				return nil
			}
			n, m, hn, hm, err := statsGlobal(p)
			if err != nil {
				return err
			}
			if !hn || !hm {
				return fmt.Errorf("%w: global stats without CTA_STATS_GLOBAL_ENTRIES or _MAX_ENTRIES", errMalformed)
			}
			count, max, got = n, m, true
			return nil
		})
	if err == nil && !got {
		err = fmt.Errorf("ctnetlink: get global stats: the kernel acknowledged the request without answering it")
	}
	return count, max, err
}

// pipelineDepth is the number of receive buffers a dump cycles through; with
// two or more, receiving (where the kernel builds the next batch) overlaps
// with decoding on another goroutine.
var pipelineDepth = 4

// chunk is one received datagram, or the error that ended receiving.
type chunk struct {
	b   []byte
	err error
}

// Dump streams every entry (IPv4 and IPv6, AF_UNSPEC) to fn, reusing one *conntrack.Flow; constant memory.
//
// The Flow is only valid during the call. An error from fn stops the
// delivery and is returned after the rest of the dump has been read and
// discarded, so the Conn stays usable. If the kernel flags the dump as
// interrupted, the error wraps [ErrInterrupted].
func (c *Conn) Dump(fn func(*conntrack.Flow) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return ErrClosed
	}
	if c.broken != nil {
		return c.broken
	}
	seq, err := c.request(ipctnlMsgCtGet, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, unix.AF_UNSPEC)
	if err != nil {
		return err
	}
	depth := max(pipelineDepth, 1)
	bufs := c.buffers(depth)
	free := make(chan []byte, depth)
	for _, b := range bufs {
		free <- b
	}
	full := make(chan chunk, depth)
	go c.receive(seq, free, full)

	s := dumpState{seq: seq, pid: c.portID, dec: &c.dec, fn: fn}
	finished := false
	defer func() {
		if !finished { // fn panicked: let the receiver run to the end
			c.broken = fmt.Errorf("ctnetlink: connection unusable after a panic in the Dump callback; open a new one")
			go func() {
				for ch := range full {
					free <- ch.b
				}
			}()
		}
	}()
	var recvErr error
	for ch := range full {
		if ch.err != nil {
			recvErr = ch.err
			continue
		}
		if !s.ended {
			c.dec.now = time.Now().Unix()
			s.datagram(ch.b)
		}
		free <- ch.b
	}
	finished = true
	if s.framingLost {
		c.broken = fmt.Errorf("ctnetlink: connection unusable after a failed dump (%v); open a new one", s.decErr)
	}
	switch {
	case recvErr != nil:
		c.broken = fmt.Errorf("ctnetlink: connection unusable after a failed dump (%v); open a new one", recvErr)
		if s.fnErr != nil {
			return s.fnErr
		}
		return recvErr
	case s.fnErr != nil:
		return s.fnErr
	case s.decErr != nil:
		return s.decErr
	case s.intr:
		return fmt.Errorf("ctnetlink: dump: %w", ErrInterrupted)
	}
	return nil
}

// dumpState follows one dump through its datagrams.
type dumpState struct {
	seq, pid uint32
	dec      *decoder
	fn       func(*conntrack.Flow) error
	f        conntrack.Flow

	fnErr       error // from fn, returned as is
	decErr      error // a decoding or kernel error
	intr        bool  // NLM_F_DUMP_INTR seen
	ended       bool  // NLMSG_DONE or NLMSG_ERROR seen, or framing lost
	framingLost bool  // a malformed message header: the rest is unreadable
}

// datagram decodes one datagram of the dump, calling fn for each entry
// until fn or the decoder fails; after that it only looks for the end.
func (s *dumpState) datagram(b []byte) {
	for len(b) > 0 && !s.ended {
		h, p, rest, err := nextMsg(b)
		if err != nil {
			s.decErr = fmt.Errorf("ctnetlink: dump: %w", err)
			s.ended, s.framingLost = true, true
			return
		}
		b = rest
		if h.seq != s.seq || h.pid != s.pid {
			continue // an answer to an earlier request, or not for us
		}
		if h.flags&nlmFDumpIntr != 0 {
			s.intr = true
		}
		if isCtl, end, err := control(h, p, "dump"); isCtl {
			if end {
				s.ended = true
				if s.decErr == nil {
					s.decErr = err
				}
			}
			continue
		}
		if s.fnErr != nil || s.decErr != nil || ctType(h.typ) != 0 { // 0: IPCTNL_MSG_CT_NEW
			continue
		}
		if err := s.dec.flow(&s.f, p); err != nil {
			s.decErr = fmt.Errorf("ctnetlink: dump: %w", err)
			continue // read on to the end so the socket stays usable
		}
		if err := s.fn(&s.f); err != nil {
			s.fnErr = err
		}
	}
}

// receive reads a dump's datagrams into buffers taken from free and hands
// them to full until the datagram holding the dump's end (or an error); it
// then closes full.
func (c *Conn) receive(seq uint32, free <-chan []byte, full chan<- chunk) {
	defer close(full)
	r := receiver{fd: c.fd}
	for b := range free {
		n, err := r.recv(b[:cap(b)], "dump")
		if err != nil {
			full <- chunk{b: b, err: err}
			return
		}
		full <- chunk{b: b[:n]}
		if endsDump(b[:n], seq, c.portID) {
			return
		}
	}
}

// endsDump reports whether a datagram holds the end of the dump with the
// given sequence number (NLMSG_DONE or NLMSG_ERROR), or is malformed.
func endsDump(b []byte, seq, pid uint32) bool {
	for len(b) > 0 {
		h, _, rest, err := nextMsg(b)
		if err != nil {
			return true
		}
		b = rest
		if h.seq == seq && h.pid == pid && (h.typ == unix.NLMSG_DONE || h.typ == unix.NLMSG_ERROR) {
			return true
		}
	}
	return false
}
