package host

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host/ctnetlink"
)

// This file holds every use of host/ctnetlink by the readers.

// netlinkEntries checks that ctnetlink answers in the namespace (nsPath ""
// is the caller's) and returns a Source that dumps the table over a fresh
// connection on each call.
func netlinkEntries(nsPath string) (conntrack.Source, error) {
	c, err := ctnetlink.Open(nsPath)
	if err != nil {
		return nil, err
	}
	// A cheap request proves the privilege and the kernel support before
	// committing to netlink (opening the socket needs neither).
	_, _, err = c.Count()
	c.Close()
	if err != nil {
		return nil, err
	}
	return func(fn func(*conntrack.Flow) error) error {
		c, err := ctnetlink.Open(nsPath)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Dump(fn); err != nil {
			return fmt.Errorf("netlink dump: %w", err)
		}
		return nil
	}, nil
}

// netlinkStats reads the per-CPU statistics over ctnetlink (what
// `conntrack -S` shows).
func netlinkStats(nsPath string) ([]conntrack.Stats, error) {
	c, err := ctnetlink.Open(nsPath)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st, err := c.Stats()
	if err != nil {
		return nil, withPrivilege(err)
	}
	return st, nil
}

// netlinkCount reads the namespace's count and the global max over ctnetlink.
func netlinkCount(nsPath string) (count, max int64, err error) {
	c, err := ctnetlink.Open(nsPath)
	if err != nil {
		return -1, -1, err
	}
	defer c.Close()
	count, max, err = c.Count()
	if err != nil {
		return -1, -1, withPrivilege(err)
	}
	return count, max, nil
}

func withPrivilege(err error) error {
	if errors.Is(err, ctnetlink.ErrPermission) {
		return fmt.Errorf("%w (the netlink statistics need CAP_NET_ADMIN: run as root)", err)
	}
	return err
}

// isPermission reports whether err is a missing privilege, from netlink or a file.
func isPermission(err error) bool {
	return err != nil && (errors.Is(err, ctnetlink.ErrPermission) || errors.Is(err, fs.ErrPermission))
}
