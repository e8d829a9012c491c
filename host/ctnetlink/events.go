package ctnetlink

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"golang.org/x/sys/unix"
)

// Values from linux/netfilter/nfnetlink.h and nfnetlink_conntrack.h.
const (
	// enum nfnetlink_groups: the conntrack event multicast groups.
	nfnlgrpConntrackNew     = 1
	nfnlgrpConntrackUpdate  = 2
	nfnlgrpConntrackDestroy = 3

	// enum cntl_msg_types
	ipctnlMsgCtNew    = 0
	ipctnlMsgCtDelete = 2
)

// DefaultEventBuffer is the socket receive buffer [OpenEvents] asks for
// when EventOptions.ReadBuffer is 0: about ten thousand events of
// backlog before the kernel drops some.
const DefaultEventBuffer = 8 << 20

// Receiving: up to eventVec datagrams per recvmmsg(2), each in a buffer
// of eventBufSize bytes; an event message is a few hundred bytes (its
// size is bounded by the attributes ctnetlink puts in it, well under 4
// KiB). One system call for many events: most of an event's cost was
// its own call.
const (
	eventVec     = 64
	eventBufSize = 4 << 10
)

// MaxBatch bounds the events one [Events.Read] delivers, so the caller
// regains control under a steady stream.
const MaxBatch = 4096

// ErrEventsLost is wrapped by the error [Events.Read] returns when the
// kernel dropped events because the socket's receive buffer was full
// (ENOBUFS): whatever the caller keeps from events is incomplete from then
// on and must be rebuilt from a listing. The socket stays subscribed.
var ErrEventsLost = errors.New("conntrack events lost: the socket receive buffer overflowed (ENOBUFS), list the table again to resynchronise")

// EventType says what an event reports.
type EventType uint8

// Event types, numbered as their multicast groups (NFNLGRP_CONNTRACK_*).
const (
	// EventNew: an entry was confirmed (IPCTNL_MSG_CT_NEW with
	// NLM_F_CREATE|NLM_F_EXCL).
	EventNew EventType = nfnlgrpConntrackNew
	// EventUpdate: an entry changed: its state, status bits, mark, …
	// (IPCTNL_MSG_CT_NEW without those flags).
	EventUpdate EventType = nfnlgrpConntrackUpdate
	// EventDestroy: an entry was removed (IPCTNL_MSG_CT_DELETE).
	EventDestroy EventType = nfnlgrpConntrackDestroy
)

// String returns "new", "update" or "destroy".
func (t EventType) String() string {
	switch t {
	case EventNew:
		return "new"
	case EventUpdate:
		return "update"
	case EventDestroy:
		return "destroy"
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// Event is one conntrack event.
type Event struct {
	Type EventType
	// HasState is set when the message carried the protocol state
	// (CTA_PROTOINFO): new events of TCP, SCTP and DCCP entries, and
	// updates that change it. Other updates (a status bit, a mark) and
	// destroy events on older kernels leave Flow.State zero: it is not
	// the entry's state then.
	HasState bool
	// Flow is the entry as the message describes it. Destroy events
	// carry the tuples, status, ID, zone and counters; updates carry what
	// changed besides the tuples and ID.
	Flow conntrack.Flow
}

// EventOptions choose what [OpenEvents] subscribes to.
type EventOptions struct {
	// Types are the events to receive; none means all three.
	Types []EventType
	// ReadBuffer is the socket receive buffer in bytes, set with
	// SO_RCVBUFFORCE (which needs CAP_NET_ADMIN, as the subscription
	// does), else SO_RCVBUF (capped by net.core.rmem_max); 0 means
	// DefaultEventBuffer. The kernel drops events that find it full, and
	// Read then returns ErrEventsLost.
	ReadBuffer int
}

// Events is a NETLINK_NETFILTER socket subscribed to the conntrack event
// groups of one network namespace. Read may be called from one goroutine
// at a time; Close may be called from any goroutine and ends a Read that
// waits (within eventWait).
//
// The socket is a blocking one read on the caller's goroutine, not one
// parked in the runtime's poller: the poller would wake at every event
// that arrives, where a reader that takes its events in batches (see
// Read) lets them queue in the socket unseen.
type Events struct {
	fd    int
	mu    sync.Mutex   // held by Read; Close takes it to close fd
	fdMu  sync.RWMutex // held by ReadBuffer; Close takes it to close fd
	bufs  []byte       // eventVec buffers of eventBufSize
	msgs  [eventVec]mmsghdr
	iovs  [eventVec]unix.Iovec
	names [eventVec]unix.RawSockaddrNetlink
	dec   decoder
	ev    Event
	// noMmsg is set when the kernel has no recvmmsg: one recvfrom each.
	noMmsg   bool
	closed   atomic.Bool
	deadline atomic.Int64 // UnixNano of the read deadline, 0 for none
}

// eventWait is how long one blocking receive waits before Read looks at
// Close and the deadline again.
const eventWait = 100 * time.Millisecond

// OpenEvents subscribes to conntrack events in the network namespace at
// nsPath ("" = the caller's). Only events after the subscription are
// received: list the table after OpenEvents, not before, to miss none.
//
// The kernel sends events only where net.netfilter.nf_conntrack_events
// is 1, or 2 (the default since Linux 6.0) while a listener exists; in
// that mode an entry created while nobody listened never sends any, not
// even when it is destroyed.
func OpenEvents(nsPath string, opt EventOptions) (*Events, error) {
	var groups uint32
	for _, t := range opt.Types {
		if t < EventNew || t > EventDestroy {
			return nil, fmt.Errorf("ctnetlink: events: unknown event type %d", t)
		}
		groups |= 1 << (t - 1)
	}
	if groups == 0 {
		groups = 1<<(nfnlgrpConntrackNew-1) | 1<<(nfnlgrpConntrackUpdate-1) | 1<<(nfnlgrpConntrackDestroy-1)
	}
	if opt.ReadBuffer < 0 {
		return nil, fmt.Errorf("ctnetlink: events: negative read buffer %d", opt.ReadBuffer)
	}
	if opt.ReadBuffer == 0 {
		opt.ReadBuffer = DefaultEventBuffer
	}
	fd, err := openSocket(nsPath)
	if err != nil {
		return nil, err
	}
	if err := setupEvents(fd, groups, opt.ReadBuffer); err != nil {
		unix.Close(fd)
		return nil, err
	}
	e := &Events{fd: fd, bufs: make([]byte, eventVec*eventBufSize)}
	for i := range e.msgs {
		e.iovs[i].Base = &e.bufs[i*eventBufSize]
		e.iovs[i].SetLen(eventBufSize)
		e.msgs[i].hdr.Iov = &e.iovs[i]
		e.msgs[i].hdr.SetIovlen(1)
		e.msgs[i].hdr.Name = (*byte)(unsafe.Pointer(&e.names[i]))
	}
	return e, nil
}

// mmsghdr is struct mmsghdr of recvmmsg(2).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

func setupEvents(fd int, groups uint32, rcvbuf int) error {
	tv := unix.NsecToTimeval(eventWait.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("ctnetlink: events: set SO_RCVTIMEO: %w", err)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		if errno, ok := err.(unix.Errno); ok {
			return errnoError("subscribe to conntrack events", errno)
		}
		return fmt.Errorf("ctnetlink: subscribe to conntrack events: %w", err)
	}
	return nil
}

// ReadBuffer returns the socket's receive buffer as the kernel sized it
// (twice what was asked, for its bookkeeping).
func (e *Events) ReadBuffer() (int, error) {
	e.fdMu.RLock()
	defer e.fdMu.RUnlock()
	if e.fd < 0 {
		return 0, ErrClosed
	}
	n, err := unix.GetsockoptInt(e.fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err != nil {
		return 0, fmt.Errorf("ctnetlink: events: get SO_RCVBUF: %w", err)
	}
	return n, nil
}

// SetReadDeadline makes a Read that waits past t return an error wrapping
// [ErrTimeout] (the zero time: wait forever, the default). The deadline
// is kept to within eventWait.
func (e *Events) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		e.deadline.Store(0)
	} else {
		e.deadline.Store(t.UnixNano())
	}
	return nil
}

// Close unsubscribes and closes the socket; a Read waiting returns
// ErrClosed (Close waits for it, at most eventWait).
func (e *Events) Close() error {
	if e.closed.Swap(true) {
		return ErrClosed
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fdMu.Lock()
	defer e.fdMu.Unlock()
	if err := unix.Close(e.fd); err != nil {
		return fmt.Errorf("ctnetlink: events: close: %w", err)
	}
	e.fd = -1
	return nil
}

// Read waits for events and hands each to fn, in the order the kernel
// queued them, then returns how many it delivered: every event queued at
// that moment, up to a few thousand. The Event is reused: it is valid
// during the call only.
//
// When the kernel dropped events (the receive buffer was full) Read
// delivers those queued before the loss and returns an error wrapping
// [ErrEventsLost]; later Reads go on with the events after it. A
// malformed message ends the batch with an error, after the events of
// the other messages received with it; within its own datagram, the
// events after it are lost. After Close, Read returns [ErrClosed].
func (e *Events) Read(fn func(*Event)) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	wait := true // until the first datagram
	for n < MaxBatch {
		if e.closed.Load() {
			return n, ErrClosed
		}
		if d := e.deadline.Load(); wait && d != 0 && time.Now().UnixNano() >= d {
			return n, fmt.Errorf("ctnetlink: events: %w", ErrTimeout)
		}
		m, errno := e.receive(wait)
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if wait {
				continue // eventWait passed: look at Close and the deadline
			}
			return n, nil // the queue is empty: the batch is done
		case unix.ENOBUFS:
			return n, fmt.Errorf("ctnetlink: events: %w: %w", ErrEventsLost, errno)
		default:
			return n, errnoError("receive events", errno)
		}
		wait = false
		// The datagrams received are all decoded; the first that could
		// not be ends the batch, with its error.
		var first error
		for i := range m {
			mm, sa := &e.msgs[i], &e.names[i]
			if mm.hdr.Flags&unix.MSG_TRUNC != 0 || mm.len > eventBufSize {
				if first == nil {
					first = fmt.Errorf("ctnetlink: events: a %d-byte message did not fit the %d-byte buffer", mm.len, eventBufSize)
				}
				continue
			}
			if sa.Family != unix.AF_NETLINK || sa.Pid != 0 {
				continue // not from the kernel
			}
			b := e.bufs[i*eventBufSize : i*eventBufSize+int(mm.len)]
			k, err := decodeEvents(b, &e.dec, &e.ev, fn)
			n += k
			if err != nil && first == nil {
				first = err
			}
		}
		if first != nil {
			return n, first
		}
	}
	return n, nil
}

// receive reads up to eventVec datagrams into e.msgs (with recvmmsg, or
// one with recvfrom where the kernel lacks it) and returns how many; with
// wait it blocks (up to eventWait) until the first arrives.
func (e *Events) receive(wait bool) (int, unix.Errno) {
	fd := uintptr(e.fd)
	vlen := eventVec
	if e.noMmsg {
		vlen = 1
	}
	flags := uintptr(unix.MSG_TRUNC | unix.MSG_DONTWAIT)
	if wait {
		flags = unix.MSG_TRUNC | unix.MSG_WAITFORONE
	}
	for i := range vlen {
		e.msgs[i].hdr.Namelen = unix.SizeofSockaddrNetlink
		e.msgs[i].hdr.Flags = 0
		e.msgs[i].len = 0
	}
	if !e.noMmsg {
		m, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&e.msgs[0])), uintptr(vlen), flags, 0, 0)
		if errno != unix.ENOSYS {
			return int(m), errno
		}
		e.noMmsg = true
	}
	salen := uint32(unix.SizeofSockaddrNetlink)
	m, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&e.bufs[0])), eventBufSize,
		flags&^unix.MSG_WAITFORONE, uintptr(unsafe.Pointer(&e.names[0])), uintptr(unsafe.Pointer(&salen)))
	if errno != 0 {
		return 0, errno
	}
	e.msgs[0].len = uint32(m)
	return 1, 0
}

// decodeEvents decodes the event messages of one datagram into ev and
// calls fn for each; it returns how many it delivered.
func decodeEvents(b []byte, dec *decoder, ev *Event, fn func(*Event)) (int, error) {
	n := 0
	for len(b) > 0 {
		h, p, rest, err := nextMsg(b)
		if err != nil {
			return n, fmt.Errorf("ctnetlink: events: %w", err)
		}
		b = rest
		if isCtl, _, err := control(h, p, "events"); isCtl {
			if err != nil {
				return n, err
			}
			continue
		}
		switch ctType(h.typ) {
		case ipctnlMsgCtNew:
			ev.Type = EventUpdate
			if h.flags&(unix.NLM_F_CREATE|unix.NLM_F_EXCL) != 0 {
				ev.Type = EventNew
			}
		case ipctnlMsgCtDelete:
			ev.Type = EventDestroy
		default:
			continue // another subsystem's or message type's
		}
		dec.now = time.Now().Unix()
		if err := dec.flow(&ev.Flow, p); err != nil {
			return n, fmt.Errorf("ctnetlink: %s event: %w", ev.Type, err)
		}
		ev.HasState = hasTopAttr(p, ctaProtoinfo)
		fn(ev)
		n++
	}
	return n, nil
}

// hasTopAttr reports whether a conntrack message (nfgenmsg and
// attributes, already decoded without error) holds attribute typ at the
// top level.
func hasTopAttr(msg []byte, typ uint16) bool {
	b := msg[nfgenHdrLen:]
	for len(b) > 0 {
		t, _, rest, err := nextAttr(b)
		if err != nil {
			return false
		}
		if t == typ {
			return true
		}
		b = rest
	}
	return false
}
