package ruleset

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/ctdoctor/ctdoctor/host"
)

// commandTimeout bounds each iptables-save run when ctx has no deadline.
const commandTimeout = 15 * time.Second

// Read reads the live firewall of a network namespace: the nftables
// ruleset over netlink (google/nftables, in the namespace through its file
// descriptor) and the iptables and ip6tables rules of both backends
// (iptables-legacy-save, iptables-nft-save, run inside the namespace).
// Tables that iptables-nft manages are marked BackendIptablesNft, whether
// they were seen over netlink or in iptables-nft-save's text.
//
// Parts that cannot be read (a backend not installed, nf_tables missing
// from the kernel) become Warnings. Without CAP_NET_ADMIN the error wraps
// [ErrPermission]; a namespace that does not exist is an error naming the
// ones that do.
func Read(ctx context.Context, t Target) (*Ruleset, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if t.NetNS != "" {
		if _, err := host.ResolveNetNS(t.NetNS); err != nil {
			if errors.Is(err, os.ErrPermission) {
				return nil, fmt.Errorf("%w: %w", ErrPermission, err)
			}
			return nil, err
		}
	}
	rs := &Ruleset{NetNS: t.NetNS, Tools: findTools(ctx)}
	if v, err := readUnprivilegedPortStart(t.path()); err == nil {
		rs.UnprivilegedPortStart = &v
	} else if !errors.Is(err, os.ErrNotExist) { // kernels before 4.11 have no such setting: 1024
		rs.Warnings = append(rs.Warnings, fmt.Sprintf("net.ipv4.ip_unprivileged_port_start: %v (taken as %d)", err, DefaultUnprivilegedPortStart))
	}
	nftTables, err := readNft(t.path())
	switch {
	case err == nil:
		rs.Nftables = true
	case errors.Is(err, ErrPermission):
		return nil, err
	default:
		rs.Warnings = append(rs.Warnings, fmt.Sprintf("nftables: %v", err))
	}
	saved := map[string]bool{} // "ip filter" of iptables-nft-save
	for _, s := range []struct {
		tool string
		b    Backend
		fam  Family
	}{
		{rs.Tools.IptablesLegacy, BackendIptablesLegacy, "ip"},
		{rs.Tools.Ip6tablesLegacy, BackendIptablesLegacy, "ip6"},
		{rs.Tools.IptablesNft, BackendIptablesNft, "ip"},
		{rs.Tools.Ip6tablesNft, BackendIptablesNft, "ip6"},
	} {
		if s.tool == "" {
			continue
		}
		out, err := runIn(ctx, t.path(), s.tool+"-save")
		if err != nil {
			if errors.Is(err, ErrPermission) {
				return nil, err
			}
			rs.Warnings = append(rs.Warnings, fmt.Sprintf("%s-save: %v", s.tool, err))
			continue
		}
		tables, err := ParseSave(bytes.NewReader(out), s.b, s.fam)
		if err != nil {
			rs.Warnings = append(rs.Warnings, fmt.Sprintf("%s-save: %v", s.tool, err))
			continue
		}
		for _, tb := range tables {
			if s.b == BackendIptablesNft {
				saved[string(tb.Family)+" "+tb.Name] = true
			}
		}
		rs.Tables = append(rs.Tables, tables...)
	}
	for _, tb := range nftTables {
		if iptablesNftShaped(tb) {
			tb.Backend = BackendIptablesNft
			if saved[string(tb.Family)+" "+tb.Name] {
				continue // iptables-nft-save's view of it is already here
			}
		}
		rs.Tables = append(rs.Tables, tb)
	}
	return rs, nil
}

// iptablesNftShaped says whether an nft table is managed by iptables-nft:
// it holds xt compat expressions, or it is an iptables table (ip or ip6
// filter, nat, mangle, raw, security) whose base chains carry iptables'
// built-in names for their hooks.
func iptablesNftShaped(t *Table) bool {
	if t.Compat {
		return true
	}
	if _, ok := iptPriority[t.Name]; !ok || (t.Family != "ip" && t.Family != "ip6") {
		return false
	}
	base := 0
	for _, c := range t.Chains {
		if !c.Base() {
			continue
		}
		base++
		if iptHooks[c.Name] != c.Hook {
			return false
		}
	}
	return base > 0
}

// readNft lists every table, chain, set and rule of a namespace over
// netlink. path "" is the caller's namespace.
func readNft(path string) ([]*Table, error) {
	var opts []nftables.ConnOption
	if path != "" {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, netlinkErr(fmt.Errorf("open network namespace %s: %w", path, err))
		}
		defer unix.Close(fd)
		if fd == 0 {
			// The library takes fd 0 for "no namespace".
			fd2, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 1)
			if err != nil {
				return nil, fmt.Errorf("dup namespace fd: %w", err)
			}
			defer unix.Close(fd2)
			fd = fd2
		}
		opts = append(opts, nftables.WithNetNSFd(fd))
	}
	conn, err := nftables.New(append(opts, nftables.AsLasting())...)
	if err != nil {
		return nil, netlinkErr(fmt.Errorf("nftables netlink socket: %w", err))
	}
	defer conn.CloseLasting()
	nts, err := conn.ListTables()
	if err != nil {
		return nil, netlinkErr(fmt.Errorf("list tables: %w", err))
	}
	chains, err := conn.ListChains()
	if err != nil {
		return nil, netlinkErr(fmt.Errorf("list chains: %w", err))
	}
	var out []*Table
	for _, nt := range nts {
		fam, ok := familyNames[nt.Family]
		if !ok {
			fam = Family(fmt.Sprintf("family%d", nt.Family))
		}
		t := &Table{Backend: BackendNft, Family: fam, Name: nt.Name}
		sets, err := readSets(conn, nt)
		if err != nil {
			return nil, err
		}
		for _, nc := range chains {
			if nc.Table == nil || nc.Table.Name != nt.Name || nc.Table.Family != nt.Family {
				continue
			}
			c := decodeChain(nc, nt.Family)
			rules, err := conn.GetRules(nt, nc)
			if err != nil {
				return nil, netlinkErr(fmt.Errorf("list rules of %s %s chain %s: %w", fam, nt.Name, nc.Name, err))
			}
			for i, nr := range rules {
				r := decodeRule(nr, sets)
				r.Index = i + 1
				t.Compat = t.Compat || r.Compat
				c.Rules = append(c.Rules, r)
			}
			t.Chains = append(t.Chains, c)
		}
		out = append(out, t)
	}
	return out, nil
}

func readSets(conn *nftables.Conn, nt *nftables.Table) (map[string]*nftSet, error) {
	sets, err := conn.GetSets(nt)
	if err != nil {
		return nil, netlinkErr(fmt.Errorf("list sets of %s: %w", nt.Name, err))
	}
	out := map[string]*nftSet{}
	for _, s := range sets {
		elems, err := conn.GetSetElements(s)
		if err != nil {
			return nil, netlinkErr(fmt.Errorf("list elements of set %s: %w", s.Name, err))
		}
		out[s.Name] = &nftSet{interval: s.Interval, concat: s.Concatenation || len(s.KeyType.Name) > 0 && strings.Contains(s.KeyType.Name, " . "),
			isMap: s.IsMap, elems: elems}
	}
	return out, nil
}

// netlinkErr marks permission errors with ErrPermission.
func netlinkErr(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w: %w (reading the ruleset needs CAP_NET_ADMIN: run as root)", ErrPermission, err)
	}
	return err
}

// findTools looks up the firewall commands on PATH. A plain iptables is
// used for the backend its version string names (iptables v1.8.9
// (nf_tables) or (legacy); before 1.8 there was only legacy).
func findTools(ctx context.Context) Tools {
	var t Tools
	look := func(name string) string {
		if _, err := exec.LookPath(name); err == nil {
			return name
		}
		return ""
	}
	t.Nft = look("nft")
	t.IptablesLegacy, t.IptablesNft = look("iptables-legacy"), look("iptables-nft")
	t.Ip6tablesLegacy, t.Ip6tablesNft = look("ip6tables-legacy"), look("ip6tables-nft")
	plain := func(name string, legacy, nft *string) {
		if *legacy != "" && *nft != "" || look(name) == "" || look(name+"-save") == "" {
			return
		}
		c, cancel := context.WithTimeout(ctx, commandTimeout)
		defer cancel()
		out, err := exec.CommandContext(c, name, "-V").Output()
		if err != nil {
			return
		}
		if strings.Contains(string(out), "nf_tables") {
			if *nft == "" {
				*nft = name
			}
		} else if *legacy == "" {
			*legacy = name
		}
	}
	plain("iptables", &t.IptablesLegacy, &t.IptablesNft)
	plain("ip6tables", &t.Ip6tablesLegacy, &t.Ip6tablesNft)
	// A save command must exist beside each tool for Read.
	for _, p := range []*string{&t.IptablesLegacy, &t.IptablesNft, &t.Ip6tablesLegacy, &t.Ip6tablesNft} {
		if *p != "" && look(*p+"-save") == "" {
			*p = ""
		}
	}
	return t
}

// unprivPortFile is where the namespace's ip_unprivileged_port_start is
// read; /proc/sys/net shows the namespace of the thread that opens it.
const unprivPortFile = "/proc/sys/net/ipv4/ip_unprivileged_port_start"

// readUnprivilegedPortStart reads net.ipv4.ip_unprivileged_port_start of
// the namespace at path ("" the caller's), from an OS thread that has
// joined it (that thread is never returned to the Go scheduler).
func readUnprivilegedPortStart(path string) (int, error) {
	read := func() (int, error) {
		b, err := os.ReadFile(unprivPortFile)
		if err != nil {
			return 0, err
		}
		v, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || v < 0 || v > 65536 {
			return 0, fmt.Errorf("%s: %q is not a port", unprivPortFile, strings.TrimSpace(string(b)))
		}
		return v, nil
	}
	if path == "" {
		return read()
	}
	type result struct {
		v   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		if err := joinNetNS(path); err != nil {
			done <- result{err: err}
			return
		}
		v, err := read()
		done <- result{v, err}
	}()
	r := <-done
	return r.v, r.err
}

// runIn runs a command inside the namespace at path ("" the caller's) and
// returns its standard output. For another namespace the command is
// started from an OS thread that has joined it (a child inherits its
// thread's namespace); that thread is never returned to the Go scheduler.
// For the caller's own namespace it is started from the caller's thread.
func runIn(ctx context.Context, path string, argv ...string) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, commandTimeout)
		defer cancel()
	}
	if path == "" {
		return run(ctx, argv)
	}
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		if err := joinNetNS(path); err != nil {
			if errors.Is(err, unix.EPERM) {
				err = fmt.Errorf("%w: %w (entering a network namespace needs CAP_SYS_ADMIN: run as root)", ErrPermission, err)
			}
			done <- result{err: err}
			return
		}
		out, err := run(ctx, argv)
		done <- result{out, err}
	}()
	r := <-done
	return r.out, r.err
}

// joinNetNS locks the calling goroutine to its OS thread and moves that
// thread into the network namespace at path, for readUnprivilegedPortStart
// and runIn. The thread is never unlocked: the runtime discards it when the
// goroutine exits, so no other goroutine runs in the namespace.
func joinNetNS(path string) error {
	runtime.LockOSThread()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	err = unix.Setns(fd, unix.CLONE_NEWNET)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("setns %s: %w", path, err)
	}
	return nil
}

// run runs a command and returns its standard output; its standard error
// goes into the error.
func run(ctx context.Context, argv []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		switch {
		case strings.Contains(msg, "Permission denied") || strings.Contains(msg, "must be root"):
			err = fmt.Errorf("%w: %s", ErrPermission, msg)
		case msg != "":
			err = fmt.Errorf("%w: %s", err, msg)
		}
	}
	return out, err
}
