package sim

import (
	"net/netip"
	"time"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/engine"
)

// conn is one simulated connection: where it is in its program and the
// sequence numbers each side sends next. Conns live in a pool and are
// reused; the wheel refers to them by index.
type conn struct {
	at           time.Duration // when the next step is due
	end          time.Duration // keepalive: when the connection closes
	caddr, saddr netip.Addr
	cport, sport uint16
	cseq, sseq   uint32 // next sequence number the client / server sends
	w            uint16 // workload index
	phase        uint8
	tries        uint8 // retransmissions of the current step
	flags        uint8
	cpu          uint8
}

// conn flags.
const (
	fUnanswered = 1 << iota // the first packet gets no answer
	fDropped                // conntrack dropped one of its packets
)

// Steps of a connection's program.
const (
	// TCP
	phSYN       uint8 = iota // client SYN (retransmitted if dropped or unanswered)
	phSYNACK                 // server SYN/ACK
	phEstablish              // client ACK, then the first request
	phResponse               // server response (short, server closes: with its FIN)
	phAckResp                // keepalive: client ACKs the response, then idles
	phRequest                // keepalive: the next request
	phFIN1                   // the closer's FIN
	phFIN2                   // the other side's FIN, acknowledging the first
	phLastACK                // the closer's final ACK
	// UDP and ICMP
	phQuery  // client request (DNS query, echo request)
	phAnswer // server reply
)

// step runs c's current step at c.at and moves c.at to the next one; it
// reports false when the connection is over.
func (s *Simulator) step(c *conn) bool {
	w := &s.wl[c.w]
	if w.proto == conntrack.TCP {
		return s.stepTCP(c, w)
	}
	return s.stepDatagram(c, w)
}

const (
	syn    = engine.SYN
	ack    = engine.ACK
	pshAck = engine.PSH | engine.ACK
	finAck = engine.FIN | engine.ACK
	synAck = engine.SYN | engine.ACK
)

func (s *Simulator) stepTCP(c *conn, w *wstate) bool {
	switch c.phase {
	case phSYN:
		dropped := s.send(c, w, true, syn, c.cseq, 0, 0)
		if w.flood && (dropped || c.flags&fUnanswered != 0) {
			return false // a spoofed SYN is sent once
		}
		if dropped || c.flags&fUnanswered != 0 {
			return s.retry(c, time.Second, w.retries)
		}
		c.tries = 0
		c.phase = phSYNACK
		c.at += w.half
	case phSYNACK:
		if s.send(c, w, false, synAck, c.sseq, c.cseq+1, 0) {
			if w.flood {
				return false // SYN cookies: no retransmission
			}
			return s.retry(c, time.Second, w.retries)
		}
		if w.flood {
			return false // the spoofed source never answers
		}
		c.cseq++
		c.sseq++
		c.tries = 0
		c.phase = phEstablish
		c.at += w.half
	case phEstablish:
		if s.send(c, w, true, ack, c.cseq, c.sseq, 0) || s.send(c, w, true, pshAck, c.cseq, c.sseq, requestBytes) {
			return s.retry(c, rtoMin, dataRetries)
		}
		c.cseq += requestBytes
		c.tries = 0
		c.phase = phResponse
		c.at += w.half
		if w.kind == Short {
			c.at += s.draw(w.lifetime)
		}
	case phResponse:
		if w.kind == Short && !w.closerC {
			// The server answers and closes: response and FIN back to back.
			if s.send(c, w, false, pshAck, c.sseq, c.cseq, responseBytes) ||
				s.send(c, w, false, finAck, c.sseq+responseBytes, c.cseq, 0) {
				return s.retry(c, rtoMin, dataRetries)
			}
			c.sseq += responseBytes + 1
			c.phase = phFIN2
		} else {
			if s.send(c, w, false, pshAck, c.sseq, c.cseq, responseBytes) {
				return s.retry(c, rtoMin, dataRetries)
			}
			c.sseq += responseBytes
			c.phase = phFIN1
			if w.kind == Keepalive {
				c.phase = phAckResp
			}
		}
		c.tries = 0
		c.at += w.half
	case phAckResp:
		if s.send(c, w, true, ack, c.cseq, c.sseq, 0) {
			return s.retry(c, rtoMin, dataRetries)
		}
		c.tries = 0
		gap := s.draw(w.interval)
		if w.middle > 0 && min(gap, c.end-c.at) > w.middle {
			// The middlebox forgets the idle connection; neither host
			// ever sends a FIN or RST through this one.
			s.lost++
			return false
		}
		if c.at+gap >= c.end {
			c.at = max(c.at, c.end)
			c.phase = phFIN1
		} else {
			c.at += gap
			c.phase = phRequest
		}
	case phRequest:
		if s.send(c, w, true, pshAck, c.cseq, c.sseq, requestBytes) {
			return s.retry(c, rtoMin, dataRetries)
		}
		c.cseq += requestBytes
		c.tries = 0
		c.phase = phResponse
		c.at += w.half
	case phFIN1: // the closer's FIN
		if s.sendSide(c, w, true, finAck) {
			return s.retry(c, rtoMin, dataRetries)
		}
		c.fin(w, true)
		c.tries = 0
		c.phase = phFIN2
		c.at += w.half
	case phFIN2: // the other side's FIN
		if s.sendSide(c, w, false, finAck) {
			return s.retry(c, rtoMin, dataRetries)
		}
		c.fin(w, false)
		c.tries = 0
		c.phase = phLastACK
		c.at += w.half
	case phLastACK: // the closer acknowledges it
		if s.sendSide(c, w, true, ack) {
			return s.retry(c, rtoMin, dataRetries)
		}
		return false
	default:
		return false
	}
	return true
}

// sendSide sends a bare segment from the side that closes first
// (closer) or from the other one, with that side's sequence numbers, and
// reports whether conntrack dropped it.
func (s *Simulator) sendSide(c *conn, w *wstate, closer bool, flags engine.TCPFlags) bool {
	if closer == w.closerC {
		return s.send(c, w, true, flags, c.cseq, c.sseq, 0)
	}
	return s.send(c, w, false, flags, c.sseq, c.cseq, 0)
}

// fin counts the FIN a side sent in its sequence space.
func (c *conn) fin(w *wstate, closer bool) {
	if closer == w.closerC {
		c.cseq++
	} else {
		c.sseq++
	}
}

func (s *Simulator) stepDatagram(c *conn, w *wstate) bool {
	switch c.phase {
	case phQuery:
		if s.send(c, w, true, 0, 0, 0, 64) {
			return s.retry(c, time.Second, w.retries)
		}
		c.tries = 0
		if c.flags&fUnanswered != 0 {
			if w.kind == Short {
				return false
			}
			return s.idle(c, w, phQuery)
		}
		c.phase = phAnswer
		c.at += w.half
		if w.kind == Short {
			c.at += s.draw(w.lifetime)
		}
	case phAnswer:
		if s.send(c, w, false, 0, 0, 0, 512) {
			return s.retry(c, rtoMin, dataRetries)
		}
		c.tries = 0
		if w.kind == Short {
			return false
		}
		return s.idle(c, w, phQuery)
	default:
		return false
	}
	return true
}

// idle waits the workload's interval before step next, or ends a
// keepalive exchange whose lifetime is over.
func (s *Simulator) idle(c *conn, w *wstate, next uint8) bool {
	gap := s.draw(w.interval)
	if c.at+gap >= c.end {
		return false
	}
	c.at += gap
	c.phase = next
	return true
}

// retry schedules the current step again after base × 2^tries, or gives the
// connection up after max retransmissions (a failure conntrack caused if
// it dropped any of the connection's packets).
func (s *Simulator) retry(c *conn, base time.Duration, max uint8) bool {
	if c.tries >= max {
		if c.flags&fDropped != 0 {
			s.failed++
		}
		return false
	}
	c.at += base << c.tries
	c.tries++
	s.retrans++
	return true
}

// send passes one packet through the tracker and reports whether conntrack
// dropped it.
func (s *Simulator) send(c *conn, w *wstate, fromClient bool, flags engine.TCPFlags, seq, ackN uint32, payload int) bool {
	p := &s.pkt
	p.Family, p.Proto, p.Iface, p.CPU = w.family, w.proto, w.iface, int(c.cpu)
	p.Flags, p.Seq, p.Ack, p.PayloadLen = flags, seq, ackN, payload
	p.Window = 0
	if w.proto == conntrack.TCP {
		p.Window = window
	}
	if fromClient {
		p.Src, p.Dst, p.SrcPort, p.DstPort, p.Hook = c.caddr, c.saddr, c.cport, c.sport, w.c2s
	} else {
		p.Src, p.Dst, p.SrcPort, p.DstPort, p.Hook = c.saddr, c.caddr, c.sport, c.cport, w.s2c
	}
	p.ICMPType, p.ICMPCode, p.ICMPID = 0, 0, 0
	if w.proto.IsICMP() {
		p.SrcPort, p.DstPort, p.ICMPID = 0, 0, c.cport
		switch {
		case w.proto == conntrack.ICMPv6 && fromClient:
			p.ICMPType = 128
		case w.proto == conntrack.ICMPv6:
			p.ICMPType = 129
		case fromClient:
			p.ICMPType = 8
		}
	}
	v := s.tr.Process(p)
	s.packets++
	if v.Created {
		// The count only grows on an insert: its peak and the moment it
		// reaches the max are exact, not as sampled.
		if n := s.tr.Count(); n > s.peak {
			s.peak, s.peakAt = n, c.at
			if n >= s.max && s.fullAt < 0 {
				s.fullAt = c.at
			}
		}
	}
	if v.Drop {
		c.flags |= fDropped
		if s.firstDrop < 0 {
			s.firstDrop = c.at
		}
		switch v.Reason {
		case reasonChain:
			s.chainDrops++
			if s.firstChain < 0 {
				s.firstChain = c.at
			}
		default: // reasonFull, the only other cause the tracker drops for
			s.fullDrops++
			if s.firstFullDrop < 0 {
				s.firstFullDrop = c.at
			}
		}
		return true
	}
	return false
}

// The tracker's reasons for dropping a packet ([engine.Verdict.Reason]).
const (
	reasonFull  = "table full"
	reasonChain = "chain too long"
)
