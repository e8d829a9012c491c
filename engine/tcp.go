package engine

import "github.com/ctdoctor/ctdoctor/conntrack"

// TCP states (conntrack.TCPState numbering) and the two pseudo-states of
// the transition table.
const (
	sNO = uint8(conntrack.TCPNone)
	sSS = sNO + 1
	sSR = sNO + 2
	sES = sNO + 3
	sFW = sNO + 4
	sCW = sNO + 5
	sLA = sNO + 6
	sTW = sNO + 7
	sCL = sNO + 8
	sS2 = sNO + 9
	sIV = 10 // invalid: packet left without a conntrack
	sIG = 11 // ignore: accepted, state and timeout unchanged
)

// TCP packet classes, in the order they are tested.
const (
	iSYN = iota
	iSYNACK
	iFIN
	iACK
	iRST
	iNONE
)

// tcpTable[dir][class][state] is the next state (kernel-conntrack.md §5).
var tcpTable = [2][6][10]uint8{
	Original: {
		/*          NO   SS   SR   ES   FW   CW   LA   TW   CL   S2 */
		iSYN:    {sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2},
		iSYNACK: {sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR},
		iFIN:    {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV},
		iACK:    {sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV},
		iRST:    {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
		iNONE:   {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
	},
	Reply: {
		/*          NO   SS   SR   ES   FW   CW   LA   TW   CL   S2 */
		iSYN:    {sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2},
		iSYNACK: {sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR},
		iFIN:    {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV},
		iACK:    {sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG},
		iRST:    {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
		iNONE:   {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
	},
}

func tcpClass(f TCPFlags) uint8 {
	switch {
	case f&RST != 0:
		return iRST
	case f&SYN != 0:
		if f&ACK != 0 {
			return iSYNACK
		}
		return iSYN
	case f&FIN != 0:
		return iFIN
	case f&ACK != 0:
		return iACK
	}
	return iNONE
}

// tcpValidFlags reports whether the flag combination is one the kernel
// accepts (ECE, CWR and PSH are ignored); any other is INVALID before the
// table is consulted.
func tcpValidFlags(f TCPFlags) bool {
	switch f &^ (ECE | CWR | PSH) {
	case SYN, SYN | URG, SYN | ACK, RST, RST | ACK, FIN | ACK, FIN | ACK | URG, ACK, ACK | URG:
		return true
	}
	return false
}

// seqAfter reports whether sequence number a is after b (mod 2^32).
func seqAfter(a, b uint32) bool { return int32(a-b) > 0 }

func fingerprint(seq, ack, end uint32, win uint16) uint32 {
	h := uint64(seq)*0x9E3779B97F4A7C15 ^ uint64(ack)*0xC2B2AE3D27D4EB4F ^ uint64(end)*0x165667B19E3779F9 ^ uint64(win)
	return uint32(h ^ h>>32)
}

// tcp actions.
const (
	tcpAccept    = iota // state and timeout updated
	tcpIgnore           // accepted, nothing updated
	tcpInvalid          // INVALID, nothing updated
	tcpKill             // accepted, then the entry is deleted (RST before any reply)
	tcpReopen           // the entry is deleted and the packet tracked as new
	tcpNoRefresh        // state updated, timeout left as it was
)

func (ti *tcpInfo) lastDir() Direction {
	if ti.tflags&tcpLastDirReply != 0 {
		return Reply
	}
	return Original
}

func (ti *tcpInfo) setLast(class uint8, dir Direction) {
	ti.lastIndex = class
	ti.tflags &^= tcpLastDirReply
	if dir == Reply {
		ti.tflags |= tcpLastDirReply
	}
}

// tcpPacket runs the TCP tracker on an entry for one packet. It returns the
// action, the new state and the timeout to set (ns) for tcpAccept.
func (t *Tracker) tcpPacket(e *entry, p *Packet, dir Direction, old uint8) (action int, state uint8, tmo int64) {
	ti := &e.tcp
	class := tcpClass(p.Flags)
	ns := tcpTable[dir][class][old]
	end := p.Seq + uint32(p.PayloadLen)
	if p.Flags&SYN != 0 {
		end++
	}
	if p.Flags&FIN != 0 {
		end++
	}
	switch ns {
	case sSS:
		if old < sTW {
			break
		}
		// A SYN on a closed connection: reopen it when it was closed by
		// FIN, or its last packet in this direction was an RST.
		if ti.tflags&(tcpCloseInit0|tcpCloseInit1) != 0 || (ti.lastDir() == dir && ti.lastIndex == iRST) {
			return tcpReopen, old, 0
		}
		fallthrough
	case sIG:
		if class == iSYNACK && ti.lastIndex == iSYN && ti.lastDir() != dir && p.Ack == ti.lastFP {
			// The SYN/ACK answers a SYN we ignored: both ends are in a
			// new connection the table missed; resync to it.
			old, ns = sSS, sSR
			ti.tflags &^= tcpEndSet0 | tcpEndSet1 | tcpUnack0 | tcpUnack1 | tcpCloseInit0 | tcpCloseInit1
			ti.retrans = 0
			ti.end[dir^1] = p.Ack
			ti.tflags |= tcpEndSet0 << (dir ^ 1)
			break
		}
		ti.setLast(class, dir)
		ti.lastFP = end // remembered so a SYN/ACK acknowledging this packet resyncs
		ti.winOpen = p.Window != 0
		return tcpIgnore, old, 0
	case sIV:
		return tcpInvalid, old, 0
	case sS2:
		ti.tflags |= tcpSimOpen
	case sSR:
		if old == sSR && dir == Reply && class == iACK && ti.tflags&tcpSimOpen != 0 {
			ns = sES // the table cannot express the end of a simultaneous open
		}
	}

	// Sequence bookkeeping (windows themselves are not enforced).
	s, r := dir, dir^1
	if ti.tflags&(tcpEndSet0<<s) == 0 {
		ti.end[s] = end
		ti.tflags |= tcpEndSet0 << s
	} else if seqAfter(end, ti.end[s]) {
		ti.end[s] = end
		ti.tflags |= tcpUnack0 << s
	}
	ack := p.Ack
	if p.Flags&ACK == 0 {
		ack = ti.end[r]
	}
	if ti.tflags&(tcpEndSet0<<r) != 0 && ack == ti.end[r] {
		ti.tflags &^= tcpUnack0 << r
	}
	if class == iACK {
		fp := fingerprint(p.Seq, ack, end, p.Window)
		if ti.lastDir() == dir && ti.lastFP == fp {
			if ti.retrans < 255 {
				ti.retrans++
			}
		} else {
			ti.lastFP = fp
			ti.winOpen = p.Window != 0
			ti.retrans = 0
		}
	}

	to := &t.to
	tmo = to.tcp[ns]
	switch {
	case int(ti.retrans) >= to.maxRetrans && tmo > to.tcpRetrans:
		tmo = to.tcpRetrans
	case class == iRST:
		tmo = to.tcp[sCL]
	case ti.tflags&(tcpUnack0|tcpUnack1) != 0 && tmo > to.tcpUnack:
		tmo = to.tcpUnack
	case !ti.winOpen && tmo > to.tcpRetrans:
		tmo = to.tcpRetrans
	}
	if e.flags&eSeenReply == 0 {
		if p.Flags&RST != 0 {
			return tcpKill, ns, 0
		}
		if class == iSYN && old == sSS && dir == Original {
			// A SYN retransmitted (or reusing the port) does not renew
			// the timeout, or a client could keep the entry forever.
			ti.setLast(class, dir)
			return tcpNoRefresh, ns, 0
		}
		// Picked up mid-stream, or no answer yet: no long ESTABLISHED timeout.
		if ns == sES && tmo > to.tcpUnack {
			tmo = to.tcpUnack
		}
	} else if e.flags&eAssured == 0 && (old == sSR || old == sES) && ns == sES {
		t.setStatus(e, conntrack.StatusAssured)
	}
	if old != ns && ns == sFW {
		ti.tflags |= tcpCloseInit0 << dir
	}
	ti.setLast(class, dir)
	return tcpAccept, ns, tmo
}
