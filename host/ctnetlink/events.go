package ctnetlink

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
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

// eventBufSize is the receive buffer of one read; an event message is a
// few hundred bytes.
const eventBufSize = 64 << 10

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
// waits.
type Events struct {
	f   *os.File
	rc  syscall.RawConn
	buf []byte
	dec decoder
	ev  Event
	// closed is set by Close before it closes the file: the poller's
	// error for a closed file is not os.ErrClosed.
	closed atomic.Bool
}

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
	var fd int
	var err error
	if nsPath == "" {
		fd, err = newSocket()
	} else {
		fd, err = socketInNetns(nsPath)
	}
	if err != nil {
		return nil, err
	}
	if err := setupEvents(fd, groups, opt.ReadBuffer); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// A non-blocking descriptor makes a pollable File: Read parks in the
	// runtime's poller, and Close wakes it.
	f := os.NewFile(uintptr(fd), "ctnetlink-events")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ctnetlink: events: %w", err)
	}
	return &Events{f: f, rc: rc, buf: make([]byte, eventBufSize)}, nil
}

func setupEvents(fd int, groups uint32, rcvbuf int) error {
	if err := unix.SetNonblock(fd, true); err != nil {
		return fmt.Errorf("ctnetlink: events: set non-blocking: %w", err)
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
	var n int
	var serr error
	err := e.rc.Control(func(fd uintptr) {
		n, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	if err != nil {
		return 0, fmt.Errorf("ctnetlink: events: %w", err)
	}
	if serr != nil {
		return 0, fmt.Errorf("ctnetlink: events: get SO_RCVBUF: %w", serr)
	}
	return n, nil
}

// SetReadDeadline makes a Read that waits past t return an error wrapping
// [ErrTimeout] (the zero time: wait forever, the default).
func (e *Events) SetReadDeadline(t time.Time) error {
	if err := e.f.SetReadDeadline(t); err != nil {
		return fmt.Errorf("ctnetlink: events: %w", err)
	}
	return nil
}

// Close unsubscribes and closes the socket; a Read waiting returns
// ErrClosed.
func (e *Events) Close() error {
	e.closed.Store(true)
	if err := e.f.Close(); err != nil {
		if errors.Is(err, os.ErrClosed) {
			return ErrClosed
		}
		return fmt.Errorf("ctnetlink: events: close: %w", err)
	}
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
// malformed message ends the batch with an error; the events after it
// are read by the next Read. After Close, Read returns [ErrClosed].
func (e *Events) Read(fn func(*Event)) (int, error) {
	n := 0
	var rerr error
	var sa unix.RawSockaddrNetlink
	err := e.rc.Read(func(fd uintptr) bool {
		for n < MaxBatch {
			salen := uint32(unix.SizeofSockaddrNetlink)
			m, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd,
				uintptr(unsafe.Pointer(&e.buf[0])), uintptr(len(e.buf)), unix.MSG_DONTWAIT|unix.MSG_TRUNC,
				uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&salen)))
			switch errno {
			case 0:
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return n > 0 // nothing delivered yet: wait for the poller
			case unix.ENOBUFS:
				rerr = fmt.Errorf("ctnetlink: events: %w: %w", ErrEventsLost, errno)
				return true
			default:
				rerr = errnoError("receive events", errno)
				return true
			}
			if int(m) > len(e.buf) {
				rerr = fmt.Errorf("ctnetlink: events: a %d-byte message did not fit the %d-byte buffer", m, len(e.buf))
				return true
			}
			if sa.Family != unix.AF_NETLINK || sa.Pid != 0 {
				continue // not from the kernel
			}
			k, err := decodeEvents(e.buf[:m], &e.dec, &e.ev, fn)
			n += k
			if err != nil {
				rerr = err
				return true
			}
		}
		return true
	})
	if err != nil {
		switch {
		case e.closed.Load() || errors.Is(err, os.ErrClosed):
			return n, ErrClosed
		case errors.Is(err, os.ErrDeadlineExceeded):
			return n, fmt.Errorf("ctnetlink: events: %w", ErrTimeout)
		}
		return n, fmt.Errorf("ctnetlink: events: %w", err)
	}
	return n, rerr
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
