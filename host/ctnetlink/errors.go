package ctnetlink

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrPermission is wrapped by errors caused by EPERM or EACCES from the kernel.
var ErrPermission = errors.New("CAP_NET_ADMIN (root) is needed for netlink conntrack access")

// ErrUnsupported is wrapped by errors caused by ctnetlink being unavailable in the kernel.
var ErrUnsupported = errors.New("ctnetlink is unavailable (is the nf_conntrack_netlink module loaded?)")

// ErrInterrupted is wrapped by the error Dump returns when the kernel flagged the dump as inconsistent (NLM_F_DUMP_INTR).
var ErrInterrupted = errors.New("dump interrupted by a concurrent table change (NLM_F_DUMP_INTR); the entries seen may be incomplete, dump again")

// ErrTimeout is wrapped by errors caused by the kernel not answering within the read timeout.
var ErrTimeout = errors.New("no answer from the kernel within the read timeout")

// ErrClosed is returned by operations on a closed Conn.
var ErrClosed = errors.New("ctnetlink: use of closed connection")

// errMalformed is wrapped by all decoding errors.
var errMalformed = errors.New("malformed netlink message")

// errnoError maps an errno from a socket call or an NLMSG_ERROR to an error
// wrapping the package's sentinels where one applies, and the errno itself.
func errnoError(op string, errno unix.Errno) error {
	switch errno {
	case unix.EPERM, unix.EACCES:
		return fmt.Errorf("ctnetlink: %s: %w: %w", op, ErrPermission, errno)
	case unix.EPROTONOSUPPORT, unix.EOPNOTSUPP, unix.EAFNOSUPPORT, unix.EINVAL:
		// nfnetlink answers EINVAL for a subsystem or message type it has
		// no handler for (ctnetlink not loaded, or too old a kernel).
		return fmt.Errorf("ctnetlink: %s: %w: %w", op, ErrUnsupported, errno)
	case unix.EAGAIN:
		return fmt.Errorf("ctnetlink: %s: %w: %w", op, ErrTimeout, errno)
	case unix.ENOBUFS:
		return fmt.Errorf("ctnetlink: %s: the socket receive buffer overflowed and the kernel dropped messages (ENOBUFS): %w", op, errno)
	case unix.EBUSY:
		return fmt.Errorf("ctnetlink: %s: a dump is still running on this socket: %w", op, errno)
	}
	return fmt.Errorf("ctnetlink: %s: %w", op, errno)
}
