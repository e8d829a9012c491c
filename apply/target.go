package apply

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctdoctor/ctdoctor/host"
	"github.com/ctdoctor/ctdoctor/tune"
)

// ErrWrongHost is wrapped by the error for a plan made for another host,
// another boot, another root directory or another network namespace.
var ErrWrongHost = errors.New("plan was made for another host")

// ErrPermission is wrapped by the error for a caller that lacks a
// capability apply needs on the live host; it names the capability.
var ErrPermission = errors.New("insufficient privileges")

// initNetNSPath is the initial network namespace (of PID 1).
const initNetNSPath = "/proc/1/ns/net"

// target is where a plan's actions land: a root directory for global
// actions ("/" for the live host) and a network namespace for the
// per-namespace ones.
type target struct {
	root string // absolute and clean; "/" is the live host
	live bool
	ns   NetNSRef // Path "" means through the root (a fake root without a namespace)
	name string   // for messages: "netns web1 [4026532315]"
}

// where names the namespace and, for a fake root, the root.
func (t *target) where() string {
	if !t.live && t.ns.Path != "" {
		return t.name + " · root " + t.root
	}
	return t.name
}

// resolveTarget finds the namespace a plan names, under the given root.
func resolveTarget(spec, root string) (*target, error) {
	if root == "" {
		root = "/"
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("root %s: %w", root, err)
	}
	t := &target{root: abs, live: abs == "/"}
	if !t.live {
		st, err := os.Stat(abs)
		if err != nil {
			return nil, fmt.Errorf("root: %w", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("root %s is not a directory", abs)
		}
	}
	t.ns.Spec = spec
	if rest, ok := strings.CutPrefix(spec, "pid:"); ok {
		spec, _, _ = strings.Cut(rest, " ")
	}
	switch spec {
	case "", "init":
		if !t.live {
			t.name = "root " + abs
			return t, nil
		}
		ino, err := statIno(initNetNSPath)
		if err != nil {
			if errors.Is(err, os.ErrPermission) {
				return nil, fmt.Errorf("%w: the initial network namespace (%s): %w; changing the live host needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN); nothing was changed", ErrPermission, initNetNSPath, err)
			}
			return nil, fmt.Errorf("initial network namespace: %w", err)
		}
		t.ns.Path, t.ns.Inode = initNetNSPath, ino
		t.name = fmt.Sprintf("netns init [%d]", ino)
		return t, nil
	}
	if spec == "self" { // the caller's own namespace, neither initial nor named
		spec = "/proc/self/ns/net"
	}
	ns, err := host.ResolveNetNS(spec)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("%w: %w", ErrPermission, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrWrongHost, err)
	}
	t.ns.Path, t.ns.Inode = ns.Path, ns.Inode
	t.name = fmt.Sprintf("netns %s [%d]", ns.Name, ns.Inode)
	return t, nil
}

func statIno(p string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: p, Err: err}
	}
	return st.Ino, nil
}

// rootPath maps an absolute host path into the root.
func (t *target) rootPath(p string) string {
	if t.live {
		return p
	}
	return filepath.Join(t.root, p)
}

// readRootFile reads a small file through the root, trimmed; "" if absent.
func (t *target) readRootFile(p string) string {
	b, err := os.ReadFile(t.rootPath(p))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (t *target) hostname() string {
	if h := t.readRootFile("/proc/sys/kernel/hostname"); h != "" {
		return h
	}
	return t.readRootFile("/etc/hostname")
}

func (t *target) bootID() string { return t.readRootFile("/proc/sys/kernel/random/boot_id") }

func (t *target) kernel() string { return t.readRootFile("/proc/sys/kernel/osrelease") }

// checkHost refuses a plan made for another host, boot, root or namespace.
func (t *target) checkHost(h tune.PlanHost) error {
	wrong := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s; make a new plan on this host (ctdoctor plan)", ErrWrongHost, fmt.Sprintf(format, args...))
	}
	planRoot := h.Root
	if planRoot == "" {
		planRoot = "/"
	}
	if pr, err := filepath.Abs(planRoot); err != nil || pr != t.root {
		return wrong("it is for root %s, not %s", planRoot, t.root)
	}
	if got := t.hostname(); got != h.Hostname {
		if got == "" {
			got = "(unknown: no hostname under the root)"
		}
		return wrong("it is for host %q, this is %q", h.Hostname, got)
	}
	if h.BootID != "" {
		got := t.bootID()
		if got != h.BootID {
			if got == "" {
				got = "unknown"
			}
			return wrong("it was made during boot %s, this boot is %s (the host rebooted: its values may have changed)", h.BootID, got)
		}
	} else if h.Kernel != "" {
		if got := t.kernel(); got != "" && got != h.Kernel {
			return wrong("it is for kernel %s, this host runs %s", h.Kernel, got)
		}
	}
	if h.NetNSInode != 0 && t.ns.Path != "" && t.ns.Inode != h.NetNSInode {
		return wrong("its network namespace %q was inode %d, the one by that name now is %d (it was deleted and recreated)", h.NetNS, h.NetNSInode, t.ns.Inode)
	}
	return nil
}

// inNS runs fn on an OS thread in the namespace at path ("" runs it on a
// locked thread of the caller's namespace), as host.InNetNS does:
// /proc/sys/net and processes started from that thread belong to the
// namespace. Failing to enter it for want of privilege is ErrPermission.
func inNS(path string, fn func() error) error {
	err := host.InNetNS(path, fn)
	if errors.Is(err, host.ErrEnterNetNS) && errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w: %w", ErrPermission, err)
	}
	return err
}

// locate returns the file an action reads and writes and the namespace
// to do it from ("" = no switch).
func (t *target) locate(scope string, a tune.Action) (file, nsPath string) {
	switch a.Kind {
	case tune.KindSysctl:
		if scope == tune.ScopeNetNS {
			if t.ns.Path != "" {
				return a.Path, t.ns.Path
			}
			return t.rootPath(a.Path), ""
		}
		if t.live && strings.HasPrefix(a.Path, "/proc/sys/net/") {
			// global net sysctls (nf_conntrack_max, nf_conntrack_buckets)
			// are writable only in the initial namespace
			return a.Path, initNetNSPath
		}
		return t.rootPath(a.Path), ""
	case tune.KindModuleParam, tune.KindFile:
		return t.rootPath(a.Path), ""
	}
	return "", t.ns.Path
}

// Linux capability numbers.
const (
	capDACOverride = 1
	capNetAdmin    = 12
	capSysAdmin    = 21
)

// effectiveCaps reads the caller's effective capability set.
func effectiveCaps() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}

// checkPrivileges refuses, before anything changes, a caller that cannot
// make the plan's changes on the live host, naming what is missing.
func (t *target) checkPrivileges(p *tune.Plan, verb string) error {
	var netAdmin, sysAdmin, writeRoot bool
	for _, s := range p.Steps {
		for _, a := range s.Actions {
			file, nsPath := t.locate(s.Scope, a)
			if nsPath != "" {
				sysAdmin = true
				netAdmin = true
			}
			if a.Kind == tune.KindNft || a.Kind == tune.KindIptables {
				netAdmin = true
			}
			// net sysctls answer to CAP_NET_ADMIN; other root-owned files
			// to uid 0 (or CAP_DAC_OVERRIDE)
			if t.live && file != "" && !strings.HasPrefix(a.Path, "/proc/sys/net/") {
				writeRoot = true
			}
		}
	}
	caps, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	var missing []string
	if netAdmin && caps&(1<<capNetAdmin) == 0 {
		missing = append(missing, "CAP_NET_ADMIN (to change nftables/iptables rules and net sysctls)")
	}
	if sysAdmin && caps&(1<<capSysAdmin) == 0 {
		missing = append(missing, "CAP_SYS_ADMIN (to enter the network namespace: "+t.name+")")
	}
	if writeRoot && os.Geteuid() != 0 && caps&(1<<capDACOverride) == 0 {
		missing = append(missing, "uid 0 or CAP_DAC_OVERRIDE (to write root-owned files under /proc/sys, /sys and /etc)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s changes the live host and needs root; missing %s — run it with sudo; nothing was changed",
			ErrPermission, verb, strings.Join(missing, ", "))
	}
	return nil
}
