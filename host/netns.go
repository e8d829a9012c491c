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
		} else {
			if name := namedNetNSByInode(ino); name != "" {
				ns.Name, ns.Path = name, filepath.Join(runNetNS, name)
			}
			ns.Created = netNSCreated(ns.Path, ino)
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
		path := ns.Path
		if name := namedNetNSByInode(ino); name != "" {
			path = filepath.Join(runNetNS, name) // pinned since `ip netns add`
		}
		ns.Created = netNSCreated(path, ino)
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

// ErrEnterNetNS is wrapped by InNetNS's error when the thread could not
// enter the namespace (with the system error: EPERM without CAP_SYS_ADMIN,
// ENOENT for a namespace that is gone), as opposed to an error of fn.
var ErrEnterNetNS = errors.New("cannot enter the network namespace")

// InNetNS runs fn on an OS thread inside the namespace at path, which it
// enters with setns(2). /proc/sys/net and /proc/thread-self/net show the
// namespace of the thread that opens them, so every per-namespace read is
// done in fn. The thread is never unlocked: it exits with the goroutine
// and is never reused in the wrong namespace. It is also switched back to
// its own namespace after fn: the runtime cannot end the process's main
// thread and parks it instead, and a thread parked inside the namespace
// would keep it alive after `ip netns del` (and its inode number from
// being reused) for as long as the process runs. An empty path runs fn on
// a locked thread of the caller's namespace.
func InNetNS(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if path == "" {
			defer runtime.UnlockOSThread()
			errc <- fn()
			return
		}
		self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		defer unix.Close(self)
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("%w: open %s: %w", ErrEnterNetNS, path, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			if errors.Is(err, unix.EPERM) {
				err = fmt.Errorf("%w (entering a network namespace needs CAP_SYS_ADMIN: run as root)", err)
			}
			errc <- fmt.Errorf("%w: setns %s: %w", ErrEnterNetNS, path, err)
			return
		}
		err = fn()
		_ = unix.Setns(self, unix.CLONE_NEWNET) // best effort: the thread ends (or is parked) either way
		errc <- err
	}()
	return <-errc
}

// ListNetNS returns the host's network namespaces: the named ones in
// /run/netns, then one per distinct inode over /proc/*/ns/net, named
// "pid:N (comm)" after the lowest PID that uses it ("init" for the initial
// namespace), each with its creation time estimated as [NetNS.Created]
// says. Processes whose links cannot be read are skipped.
func ListNetNS() ([]NetNS, error) {
	return listNetNS("/")
}

func listNetNS(root string) ([]NetNS, error) {
	initIno := initNetNSInode()
	boot := bootTimeBoottime()
	if root != "/" {
		initIno = 0
		boot = procBtime(filepath.Join(root, "proc/stat"))
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
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || seen[st.Ino] {
			continue
		}
		if root == "/" && checkNetNSFile(p) != nil {
			continue
		}
		seen[st.Ino] = true
		out = append(out, NetNS{Name: e.Name(), Path: p, Inode: st.Ino, Init: st.Ino == initIno, Created: nsfsTime(&st)})
	}
	procDir := filepath.Join(root, "proc")
	procs, err := netNSProcesses(procDir, boot)
	for _, pr := range procs {
		if seen[pr.ino] {
			continue
		}
		seen[pr.ino] = true
		dir := filepath.Join(procDir, strconv.Itoa(pr.pid))
		ns := NetNS{Name: fmt.Sprintf("pid:%d", pr.pid), Path: filepath.Join(dir, "ns/net"), Inode: pr.ino, Init: pr.ino == initIno}
		if ns.Init {
			ns.Name = "init"
		} else if comm := readComm(dir); comm != "" {
			ns.Name += " (" + comm + ")"
		}
		out = append(out, ns)
	}
	oldest := oldestStarts(procs)
	for i := range out {
		ns := &out[i]
		if ns.Init {
			ns.Created = time.Time{}
			continue
		}
		if t := oldest[ns.Inode]; !t.IsZero() && (ns.Created.IsZero() || t.Before(ns.Created)) {
			ns.Created = t
		}
	}
	return out, err
}

// nsProcess is a process and the inode of its network namespace.
type nsProcess struct {
	pid   int
	ino   uint64
	start time.Time // zero if unknown
}

// netNSProcesses lists the processes under procDir by PID with their
// network namespace's inode and start time (boot is the wall time of the
// boot clock's zero). Processes whose link cannot be read are left out.
func netNSProcesses(procDir string, boot time.Time) ([]nsProcess, error) {
	pents, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", procDir, err)
	}
	pids := make([]int, 0, len(pents))
	for _, e := range pents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > 0 {
			pids = append(pids, n)
		}
	}
	slices.Sort(pids)
	out := make([]nsProcess, 0, len(pids))
	for _, pid := range pids {
		dir := filepath.Join(procDir, strconv.Itoa(pid))
		ino, err := statInode(filepath.Join(dir, "ns/net"))
		if err != nil {
			continue
		}
		out = append(out, nsProcess{pid: pid, ino: ino, start: processStart(dir, boot)})
	}
	return out, nil
}

// oldestStarts maps each namespace inode to its oldest process's start time.
func oldestStarts(procs []nsProcess) map[uint64]time.Time {
	m := map[uint64]time.Time{}
	for _, p := range procs {
		if p.start.IsZero() {
			continue
		}
		if t, ok := m[p.ino]; !ok || p.start.Before(t) {
			m[p.ino] = p.start
		}
	}
	return m
}

// netNSCreated estimates when the namespace with inode ino was created
// (zero if nothing tells): the earlier of
//
//   - the times of its nsfs inode, seen through path (a /run/netns bind
//     mount or /proc/PID/ns/net). The kernel stamps that inode when it
//     first hands it out and keeps it only while something holds it: a
//     bind mount made by `ip netns add` holds it from the namespace's
//     first milliseconds, so its ctime is the creation time; an unheld
//     /proc/PID/ns/net is stamped anew at each stat, so its time is only
//     an upper bound;
//   - the start time of the oldest process in the namespace (clock ticks:
//     10 ms), which is the creation time for a process that was cloned into
//     a new namespace, as container runtimes do.
//
// A process that joined the namespace later (setns) may have started
// before it existed and make the estimate too early. See [NetNS.Created].
func netNSCreated(path string, ino uint64) time.Time {
	var created time.Time
	if path != "" {
		var st unix.Stat_t
		if unix.Stat(path, &st) == nil && st.Ino == ino {
			created = nsfsTime(&st)
		}
	}
	procs, _ := netNSProcesses("/proc", bootTimeBoottime())
	var mine []nsProcess
	for _, p := range procs {
		if p.ino == ino {
			mine = append(mine, p)
		}
	}
	if t := oldestStarts(mine)[ino]; !t.IsZero() && (created.IsZero() || t.Before(created)) {
		created = t
	}
	return created
}

// nsfsTime is the time an nsfs inode was stamped (its ctime, equal to its
// mtime and atime: nothing changes them later).
func nsfsTime(st *unix.Stat_t) time.Time {
	if st.Ctim.Sec == 0 && st.Ctim.Nsec == 0 {
		return time.Time{}
	}
	return time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's start time: 100 on
// every architecture Linux runs on (sysconf(_SC_CLK_TCK) without cgo).
const clockTicks = 100

// processStart returns when the process in procDir started: its
// /proc/PID/stat starttime (field 22, clock ticks after boot) on the boot
// clock whose zero is boot. Zero if unknown.
func processStart(procDir string, boot time.Time) time.Time {
	if boot.IsZero() {
		return time.Time{}
	}
	b, err := os.ReadFile(filepath.Join(procDir, "stat"))
	if err != nil {
		return time.Time{}
	}
	// "PID (comm) S PPID …": comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return time.Time{}
	}
	f := strings.Fields(string(b[i+1:]))
	const startField = 22 - 3 // fields after the comm start with the 3rd
	if len(f) <= startField {
		return time.Time{}
	}
	ticks, err := strconv.ParseUint(f[startField], 10, 63)
	if err != nil || ticks > 1<<50 {
		return time.Time{}
	}
	return boot.Add(time.Duration(ticks) * (time.Second / clockTicks))
}

// bootTimeBoottime is the wall time of CLOCK_BOOTTIME's zero, the base of
// process start times.
func bootTimeBoottime() time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}
	}
	return time.Now().Round(0).Add(-time.Duration(ts.Nano()))
}

// procBtime reads the "btime" line of a proc/stat file (zero if unknown).
func procBtime(path string) time.Time {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "btime "); ok {
			if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(s, 0)
			}
		}
	}
	return time.Time{}
}
