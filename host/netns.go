package host

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// runNetNS is where `ip netns add` bind-mounts named namespaces.
const runNetNS = "/run/netns"

// ResolveNetNS turns a namespace spec into a [NetNS]:
//
//   - "" is the caller's own namespace (Init is set when its inode equals
//     that of /proc/1/ns/net, or of kthreadd's when PID 1's is unreadable);
//   - a NAME is /run/netns/NAME, as `ip netns add` creates it;
//   - an absolute PATH is any nsfs file (a bind mount or /proc/PID/ns/net);
//   - a PID (all digits) is /proc/PID/ns/net.
//
// A namespace that does not exist is an error listing the names in
// /run/netns.
func ResolveNetNS(spec string) (NetNS, error) {
	initIno := initNetNSInode()
	if spec == "" {
		ino, err := statInode("/proc/thread-self/ns/net")
		if err != nil {
			if ino, err = statInode("/proc/self/ns/net"); err != nil {
				return NetNS{}, fmt.Errorf("own network namespace: %w", err)
			}
		}
		ns := NetNS{Name: "self", Inode: ino, Init: initIno != 0 && ino == initIno}
		if initIno == 0 {
			// Unprivileged: no other process's link is readable. The
			// net.nf_conntrack_max alias exists only in the initial namespace.
			_, err := os.Stat("/proc/sys/net/nf_conntrack_max")
			ns.Init = err == nil
		}
		if ns.Init {
			ns.Name = "init"
		} else if name := namedNetNSByInode(ino); name != "" {
			ns.Name, ns.Path = name, filepath.Join(runNetNS, name)
		}
		return ns, nil
	}
	var ns NetNS
	switch {
	case isDigits(spec):
		ns = NetNS{Name: "pid:" + spec, Path: "/proc/" + spec + "/ns/net"}
		if comm := readComm("/proc/" + spec); comm != "" {
			ns.Name += " (" + comm + ")"
		}
	case filepath.IsAbs(spec):
		ns = NetNS{Name: spec, Path: spec}
	case strings.ContainsRune(spec, '/') || spec == "." || spec == "..":
		return NetNS{}, fmt.Errorf("network namespace %q: not a name from %s, an absolute path or a PID", spec, runNetNS)
	default:
		ns = NetNS{Name: spec, Path: filepath.Join(runNetNS, spec)}
	}
	ino, err := statInode(ns.Path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return NetNS{}, fmt.Errorf("network namespace %q does not exist (%s); %s", spec, ns.Path, availableNetNS())
		}
		if errors.Is(err, os.ErrPermission) {
			return NetNS{}, fmt.Errorf("network namespace %q: %w (entering another namespace needs root: CAP_SYS_ADMIN, and CAP_SYS_PTRACE for a process's)", spec, err)
		}
		return NetNS{}, fmt.Errorf("network namespace %q: %w", spec, err)
	}
	if err := checkNetNSFile(ns.Path); err != nil {
		return NetNS{}, fmt.Errorf("network namespace %q: %w", spec, err)
	}
	ns.Inode = ino
	ns.Init = initIno != 0 && ino == initIno
	if isDigits(spec) || filepath.IsAbs(spec) {
		if name := namedNetNSByInode(ino); name != "" && !ns.Init {
			ns.Name = name
		} else if ns.Init {
			ns.Name = "init"
		}
	}
	if !ns.Init {
		ns.Created = namedNetNSCreated(ns.Name)
	}
	return ns, nil
}

// availableNetNS lists the named namespaces for an error message.
func availableNetNS() string {
	names := namedNetNS()
	if len(names) == 0 {
		return "there are no named namespaces in " + runNetNS + " (give a path or a PID instead)"
	}
	return "available in " + runNetNS + ": " + strings.Join(names, ", ")
}

// namedNetNS returns the sorted names in /run/netns.
func namedNetNS() []string {
	ents, err := os.ReadDir(runNetNS)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

func namedNetNSByInode(ino uint64) string {
	for _, n := range namedNetNS() {
		if i, err := statInode(filepath.Join(runNetNS, n)); err == nil && i == ino {
			return n
		}
	}
	return ""
}

// checkNetNSFile refuses files that are not network namespaces (a plain
// file under /run/netns left behind by a failed `ip netns add`, a typo'd path).
func checkNetNSFile(path string) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return fmt.Errorf("statfs %s: %w", path, err)
	}
	if fs.Type != unix.NSFS_MAGIC && fs.Type != unix.PROC_SUPER_MAGIC {
		return fmt.Errorf("%s is not a namespace file (not on nsfs; is it still mounted?)", path)
	}
	return nil
}

// initNetNSInode returns the initial namespace's inode, 0 if unknown.
// PID 1's link may be unreadable (a supervisor that is not dumpable);
// kthreadd (PID 2) is always in the initial namespace of the initial PID
// namespace.
func initNetNSInode() uint64 {
	for _, p := range []string{"/proc/1/ns/net", "/proc/2/ns/net"} {
		if p == "/proc/2/ns/net" && readComm("/proc/2") != "kthreadd" {
			continue
		}
		if ino, err := statInode(p); err == nil {
			return ino
		}
	}
	return 0
}

func statInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return st.Ino, nil
}

func readComm(procDir string) string {
	b, err := os.ReadFile(filepath.Join(procDir, "comm"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// inNetNS runs fn on an OS thread inside the namespace at path, which it
// enters with setns(2). /proc/sys/net and /proc/thread-self/net show the
// namespace of the thread that opens them, so every per-namespace read is
// done in fn. The thread is never unlocked: it exits with the goroutine
// and is never reused in the wrong namespace. An empty path runs fn on a
// locked thread of the caller's namespace.
func inNetNS(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if path == "" {
			defer runtime.UnlockOSThread()
			errc <- fn()
			return
		}
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open network namespace %s: %w", path, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			if errors.Is(err, unix.EPERM) {
				err = fmt.Errorf("%w (entering a network namespace needs CAP_SYS_ADMIN: run as root)", err)
			}
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// ListNetNS returns the host's network namespaces: the named ones in
// /run/netns, then one per distinct inode over /proc/*/ns/net, named
// "pid:N (comm)" after the lowest PID that uses it ("init" for the initial
// namespace). Processes whose links cannot be read are skipped.
func ListNetNS() ([]NetNS, error) {
	return listNetNS("/")
}

func listNetNS(root string) ([]NetNS, error) {
	initIno := initNetNSInode()
	if root != "/" {
		initIno = 0
	}
	seen := map[uint64]bool{}
	var out []NetNS
	runDir := filepath.Join(root, "run/netns")
	ents, err := os.ReadDir(runDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list %s: %w", runDir, err)
	}
	for _, e := range ents {
		p := filepath.Join(runDir, e.Name())
		ino, err := statInode(p)
		if err != nil || seen[ino] {
			continue
		}
		if root == "/" && checkNetNSFile(p) != nil {
			continue
		}
		seen[ino] = true
		out = append(out, NetNS{Name: e.Name(), Path: p, Inode: ino, Init: ino == initIno})
	}
	procDir := filepath.Join(root, "proc")
	pents, err := os.ReadDir(procDir)
	if err != nil {
		return out, fmt.Errorf("list %s: %w", procDir, err)
	}
	pids := make([]int, 0, len(pents))
	for _, e := range pents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > 0 {
			pids = append(pids, n)
		}
	}
	slices.Sort(pids)
	for _, pid := range pids {
		dir := filepath.Join(procDir, strconv.Itoa(pid))
		p := filepath.Join(dir, "ns/net")
		ino, err := statInode(p)
		if err != nil || seen[ino] {
			continue
		}
		seen[ino] = true
		ns := NetNS{Name: fmt.Sprintf("pid:%d", pid), Path: p, Inode: ino, Init: ino == initIno}
		if ns.Init {
			ns.Name = "init"
		} else if comm := readComm(dir); comm != "" {
			ns.Name += " (" + comm + ")"
		}
		out = append(out, ns)
	}
	return out, nil
}

// netNSNames maps namespace inodes to names, for the kernel log's
// "in netns N" (named namespaces win over process ones).
func netNSNames(root string) map[uint64]string {
	m := map[uint64]string{}
	list, _ := listNetNS(root)
	for _, ns := range list {
		if _, ok := m[ns.Inode]; !ok {
			m[ns.Inode] = ns.Name
		}
	}
	return m
}

// namedNetNSCreated returns when a named namespace was created: the ctime
// of its /run/netns bind mount, which pins the namespace's nsfs inode from
// the moment `ip netns add` makes it. Zero for unnamed namespaces, whose
// nsfs inode may be materialised long after the namespace was born.
func namedNetNSCreated(name string) time.Time {
	if name == "" || strings.ContainsRune(name, '/') {
		return time.Time{}
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(runNetNS, name), &st); err != nil {
		return time.Time{}
	}
	return time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
}
