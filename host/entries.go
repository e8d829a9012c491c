package host

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/ctdoctor/ctdoctor/conntrack"
)

// procEntryFiles are the entry listings, newest first; a fake root may
// hold them gzip-compressed.
var procEntryFiles = []string{"proc/net/nf_conntrack", "proc/net/ip_conntrack"}

// Entries returns the table's entries as a Source. On the live host it is
// a ctnetlink dump inside the namespace the options name, falling back to
// /proc/net/nf_conntrack and then the legacy /proc/net/ip_conntrack; under
// a fake root it reads proc/net/nf_conntrack or proc/net/ip_conntrack
// (or the same with .gz). It sets snap.Source to "netlink" or "proc".
// Each call of the Source reads the table afresh.
func Entries(opt Options, snap *Snapshot) (conntrack.Source, error) {
	r, err := newReader(opt, nil)
	if err != nil {
		return nil, err
	}
	var nlErr error
	if r.live {
		var src conntrack.Source
		src, nlErr = netlinkEntries(r.nsPath)
		if nlErr == nil {
			if snap != nil {
				snap.Source = "netlink"
			}
			return src, nil
		}
	}
	var errs []error
	if nlErr != nil {
		errs = append(errs, fmt.Errorf("netlink dump: %w", nlErr))
	}
	for _, rel := range procEntryFiles {
		for _, name := range []string{rel, rel + ".gz"} {
			if r.live && name != rel {
				continue
			}
			var f *os.File
			err := r.inNS(func() error {
				var err error
				f, err = os.Open(r.path(name))
				return err
			})
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, fmt.Errorf("%s: %w%s", name, err,
						privilegeHint(err, "the file is mode 0440: run as root")))
				}
				continue
			}
			f.Close()
			if snap != nil {
				snap.Source = "proc"
			}
			return r.procSource(name), nil
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no entry listing: no proc/net/nf_conntrack or proc/net/ip_conntrack under %s", r.root)
	}
	err = errors.Join(errs...)
	if errors.Is(err, fs.ErrPermission) || isPermission(nlErr) {
		return nil, fmt.Errorf("listing the table needs root (CAP_NET_ADMIN for the netlink dump, root for /proc/net/nf_conntrack): %w", err)
	}
	return nil, err
}

// procSource reads an entry listing; the file is opened inside the
// namespace (the open fixes which namespace's table it shows) and read
// from any thread.
func (r *reader) procSource(rel string) conntrack.Source {
	return func(fn func(*conntrack.Flow) error) error {
		var f *os.File
		err := r.inNS(func() error {
			var err error
			f, err = os.Open(r.path(rel))
			return err
		})
		if err != nil {
			return fmt.Errorf("open %s: %w", rel, err)
		}
		defer f.Close()
		var in io.Reader = bufio.NewReaderSize(f, 256*1024)
		if strings.HasSuffix(rel, ".gz") {
			zr, err := gzip.NewReader(in)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			defer zr.Close()
			in = zr
		}
		if err := conntrack.ReadAll(in)(fn); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		return nil
	}
}

// allNetNSUsage measures every namespace's count against the global max.
func allNetNSUsage(globalMax int64, warn func(string, ...any)) []NetNSUsage {
	list, err := ListNetNS()
	if err != nil {
		warn("--all-netns: %v", err)
	}
	r := &reader{root: "/", live: true, warn: func(string, ...any) {}}
	// The caller's own namespace is read without setns (which needs
	// CAP_SYS_ADMIN), and named init when it is: without root, /proc/1's
	// link is unreadable and ListNetNS names it after the caller's PID.
	self, selfErr := ResolveNetNS("")
	out := make([]NetNSUsage, 0, len(list))
	for _, ns := range list {
		path := ns.Path
		if selfErr == nil && self.Inode != 0 && ns.Inode == self.Inode {
			path = ""
			if self.Init && !ns.Init {
				ns.Init, ns.Name = true, "init"
			}
		}
		u := NetNSUsage{NetNS: ns, Count: -1, Max: globalMax}
		err := InNetNS(path, func() error {
			for _, rel := range []string{nfDir + "/nf_conntrack_count", legacyDir + "/ip_conntrack_count"} {
				v, err := r.readInt(rel)
				if err == nil {
					u.Count = v
					return nil
				}
				if !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
			return errors.New("no nf_conntrack_count in this namespace")
		})
		if err != nil {
			u.Error = err.Error()
		}
		out = append(out, u)
	}
	return out
}
