package ctnetlink

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// DefaultTimeout is the receive timeout a new Conn uses.
	DefaultTimeout = 10 * time.Second

	// recvBufSize is the size of each receive buffer. The kernel builds
	// dump messages of at most 32 KiB, but a larger buffer costs nothing
	// but memory and never truncates a message.
	recvBufSize = 1 << 20
	// sockRcvBuf is the socket receive buffer requested with SO_RCVBUFFORCE.
	sockRcvBuf = 4 << 20
)

// Conn is a NETLINK_NETFILTER socket bound to one network namespace; its
// methods serialise on an internal lock, so one operation runs at a time.
type Conn struct {
	mu      sync.Mutex
	fd      int
	portID  uint32
	seq     uint32
	timeout time.Duration
	bufs    [][]byte // receive buffers, reused across calls
	dec     decoder
	broken  error // set when a failed exchange left unread data behind
}

// Open opens a NETLINK_NETFILTER socket in the network namespace at nsPath ("" = the caller's).
func Open(nsPath string) (*Conn, error) {
	fd, err := openSocket(nsPath)
	if err != nil {
		return nil, err
	}
	c := &Conn{fd: fd, timeout: DefaultTimeout, seq: uint32(time.Now().UnixNano())}
	if err := c.setup(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return c, nil
}

// openSocket opens a NETLINK_NETFILTER socket in the network namespace at
// nsPath ("" = the caller's): [Open]'s and [OpenEvents]'s.
func openSocket(nsPath string) (int, error) {
	if nsPath == "" {
		return newSocket()
	}
	return socketInNetns(nsPath)
}

func newSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return -1, errnoError("socket(AF_NETLINK, NETLINK_NETFILTER)", err.(unix.Errno))
	}
	return fd, nil
}

// socketInNetns creates the socket on a dedicated OS thread that has joined
// the namespace. The thread is never unlocked, so the runtime discards it
// when the goroutine exits and no other goroutine ever runs on it; it is
// also switched back to its own namespace first, because the runtime cannot
// discard the process's main thread and parks it instead, and the main
// thread's namespace is what /proc/self/ns/net shows.
func socketInNetns(nsPath string) (int, error) {
	nsfd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("ctnetlink: open network namespace %q: %w", nsPath, err)
	}
	defer unix.Close(nsfd)
	var st unix.Statfs_t
	if err := unix.Fstatfs(nsfd, &st); err != nil {
		return -1, fmt.Errorf("ctnetlink: statfs network namespace %q: %w", nsPath, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return -1, fmt.Errorf("ctnetlink: %q is not a namespace file (want e.g. /run/netns/NAME or /proc/PID/ns/net)", nsPath)
	}
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: this thread must die with the goroutine.
		self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{-1, fmt.Errorf("ctnetlink: open this thread's network namespace: %w", err)}
			return
		}
		defer unix.Close(self)
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			if err == unix.EINVAL {
				err = fmt.Errorf("not a network namespace: %w", err)
			} else if err == unix.EPERM {
				err = fmt.Errorf("CAP_SYS_ADMIN is needed to enter a network namespace: %w", err)
			}
			ch <- result{-1, fmt.Errorf("ctnetlink: setns %q: %w", nsPath, err)}
			return
		}
		fd, err := newSocket()
		// Best effort: the thread is discarded (or parked) either way.
		_ = unix.Setns(self, unix.CLONE_NEWNET)
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

func (c *Conn) setup() error {
	if err := unix.Bind(c.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("ctnetlink: bind: %w", err)
	}
	sa, err := unix.Getsockname(c.fd)
	if err != nil {
		return fmt.Errorf("ctnetlink: getsockname: %w", err)
	}
	nl, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		return fmt.Errorf("ctnetlink: getsockname: unexpected address %T", sa)
	}
	c.portID = nl.Pid
	// A big receive buffer: SO_RCVBUFFORCE needs CAP_NET_ADMIN, which
	// ctnetlink needs anyway; fall back to SO_RCVBUF (capped by rmem_max).
	if unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockRcvBuf) != nil {
		_ = unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, sockRcvBuf)
	}
	// Acks need not echo the request.
	_ = unix.SetsockoptInt(c.fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	return c.setTimeout(c.timeout)
}

func (c *Conn) setTimeout(d time.Duration) error {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if d > 0 && tv.Sec == 0 && tv.Usec == 0 {
		tv.Usec = 1
	}
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("ctnetlink: set SO_RCVTIMEO: %w", err)
	}
	c.timeout = d
	return nil
}

// SetTimeout sets how long one receive may wait for the kernel (0 = forever); the default is DefaultTimeout.
func (c *Conn) SetTimeout(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("ctnetlink: negative timeout %v", d)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return ErrClosed
	}
	return c.setTimeout(d)
}

// Close closes the socket, waiting for a running operation to end.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return ErrClosed
	}
	err := unix.Close(c.fd)
	c.fd = -1
	c.bufs = nil
	if err != nil {
		return fmt.Errorf("ctnetlink: close: %w", err)
	}
	return nil
}

// buffers returns n receive buffers, allocated on first use.
func (c *Conn) buffers(n int) [][]byte {
	for len(c.bufs) < n {
		c.bufs = append(c.bufs, make([]byte, recvBufSize))
	}
	return c.bufs[:n]
}

// request sends an nfnetlink request for a ctnetlink message type and
// returns its sequence number.
func (c *Conn) request(msg uint16, flags uint16, family uint8) (uint32, error) {
	c.seq++
	if c.seq == 0 {
		c.seq++
	}
	var b [nlmsgHdrLen + nfgenHdrLen]byte
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], nfnlSubsysCTNetlink<<8|msg)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], c.seq)
	ne.PutUint32(b[12:], 0)
	b[16] = family
	b[17] = nfnetlinkV0
	// res_id (b[18:20]) is 0.
	for {
		err := unix.Sendto(c.fd, b[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, errnoError("send request", err.(unix.Errno))
		}
		return c.seq, nil
	}
}

// receiver reads datagrams from the kernel; it is owned by one goroutine.
type receiver struct {
	fd    int
	sa    unix.RawSockaddrNetlink
	salen uint32
}

// recv reads one datagram sent by the kernel into b, skipping datagrams from
// other senders, retrying on EINTR.
func (r *receiver) recv(b []byte, op string) (int, error) {
	for {
		r.salen = unix.SizeofSockaddrNetlink
		n, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(r.fd),
			uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_TRUNC,
			uintptr(unsafe.Pointer(&r.sa)), uintptr(unsafe.Pointer(&r.salen)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, errnoError(op, e)
		}
		if int(n) > len(b) {
			return 0, fmt.Errorf("ctnetlink: %s: a %d-byte message did not fit the %d-byte buffer", op, n, len(b))
		}
		if r.sa.Family != unix.AF_NETLINK || r.sa.Pid != 0 {
			continue // not from the kernel
		}
		return int(n), nil
	}
}
