package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctdoctor/ctdoctor/conntrack"
	"github.com/ctdoctor/ctdoctor/host"
)

type snapshotOptions struct {
	output    string
	netns     string
	anonymize bool
	noLog     bool
	noRules   bool
	partial   bool
}

func newSnapshotCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &snapshotOptions{}
	c := &cobra.Command{
		Use:   "snapshot -o FILE.tar.gz",
		Short: "Capture this host's conntrack state for offline analysis",
		Long: `snapshot captures everything ctdoctor reads — settings, counters, kernel log
events, every table entry (as /proc/net/nf_conntrack text) and the firewall
ruleset — into one .tar.gz that 'ctdoctor --snapshot FILE' diagnoses offline,
on any machine and without root. Attach it to a ticket.

--anonymize replaces every IP address (entries, log lines, ruleset) with a
consistent stand-in, the hostname and network namespace names (and their
/run/netns paths) with hashes: the same address always
maps to the same stand-in, loopback stays loopback and private stays
private, so every breakdown and finding comes out the same.

A snapshot without the table's entries is of little use, so when they
cannot be listed (listing needs root: CAP_NET_ADMIN for the netlink dump)
snapshot writes nothing and exits 1; --allow-partial writes it anyway,
marked as partial.`,
		Example: `  ctdoctor snapshot -o web1.tar.gz
  ctdoctor snapshot --netns web1 --anonymize -o web1-anon.tar.gz
  ctdoctor --snapshot web1.tar.gz`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSnapshot(cmd.Context(), o, stdout, stderr)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.output, "output", "o", "", "archive `FILE` to write (.tar.gz); - for stdout")
	f.StringVar(&o.netns, "netns", "", "network namespace to capture: a `NAME` from /run/netns, a path, or a PID")
	f.BoolVar(&o.anonymize, "anonymize", false, "replace addresses and the hostname with consistent stand-ins")
	f.BoolVar(&o.noLog, "no-log", false, "do not read the kernel log")
	f.BoolVar(&o.noRules, "no-ruleset", false, "do not capture the nftables / iptables ruleset")
	f.BoolVar(&o.partial, "allow-partial", false, "write the snapshot even when the entries cannot be listed (settings, counters and log only)")
	_ = c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"tar.gz", "tgz"}, cobra.ShellCompDirectiveFilterFileExt))
	_ = c.RegisterFlagCompletionFunc("netns", completeNetNS)
	return c
}

func runSnapshot(ctx context.Context, o *snapshotOptions, stdout, stderr io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if o.output == "" {
		return &exitError{code: 2, err: errors.New("-o FILE.tar.gz is required: the archive to write (- for stdout)"), help: "ctdoctor snapshot"}
	}
	if o.output == "-" && isTerminal(stdout) {
		return &exitError{code: 2, err: errors.New("-o -: stdout is a terminal; redirect it to a file (ctdoctor snapshot -o - > FILE.tar.gz)"), help: "ctdoctor snapshot"}
	}
	opt := host.Options{Root: "/", NetNS: o.netns, Log: !o.noLog}
	snap, err := host.Read(ctx, opt)
	if err != nil {
		return err
	}
	src, listErr := host.Entries(opt, snap)
	if listErr != nil {
		if !o.partial {
			return fmt.Errorf("cannot list the table's entries, so no snapshot was written (it would hold none of the %s entries): %w\n"+
				"Run as root (listing needs CAP_NET_ADMIN in the namespace), or pass --allow-partial to write the settings, counters and log without the entries",
				countOrUnknown(snap.Settings.Count), listErr)
		}
		snap.Warnings = append(snap.Warnings, fmt.Sprintf("entries: %v", listErr))
		src = nil
	}
	so := host.SaveOptions{Version: Version, Extra: map[string][]byte{}}
	if o.anonymize {
		so.Anon = host.NewAnonymizer(nil)
	}
	if !o.noRules {
		for name, argv := range map[string][]string{
			"ctdoctor/ruleset.nft":       {"nft", "list", "ruleset"},
			"ctdoctor/iptables-save.txt": {"iptables-save"},
		} {
			if out, err := commandInNetNS(snap.NetNS, argv...); err == nil && len(out) > 0 {
				so.Extra[name] = out
			}
		}
	}
	var w io.Writer = stdout
	var tmp *os.File
	if o.output != "-" {
		// Write next to the destination and rename: no half-written archive on failure.
		tmp, err = os.CreateTemp(filepath.Dir(o.output), ".ctdoctor-snapshot-*")
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		w = tmp
	}
	prog := newProgress(stderr, "capturing entries")
	if src != nil {
		inner := src
		src = func(fn func(*conntrack.Flow) error) error {
			return inner(func(f *conntrack.Flow) error { prog.tick(); return fn(f) })
		}
	}
	n, err := host.SaveSnapshot(w, snap, src, so)
	prog.done()
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if tmp != nil {
		if err := tmp.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp.Name(), o.output); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "wrote %s: %d entries, netns %s%s\n", o.output, n, snap.NetNS.Name, map[bool]string{true: ", anonymized"}[o.anonymize])
	}
	if src == nil {
		fmt.Fprintf(stderr, "PARTIAL SNAPSHOT: the table's entries could not be listed; it holds settings, counters and log only (%s entries in the table)\n",
			countOrUnknown(snap.Settings.Count))
	}
	for _, wn := range snap.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", wn)
	}
	return nil
}

// countOrUnknown prints a count, "?" when unknown (negative).
func countOrUnknown(n int64) string {
	if n < 0 {
		return "?"
	}
	return fmt.Sprint(n)
}

// commandInNetNS runs a command inside the namespace (via `ip netns exec`
// for a named one) and returns its output.
func commandInNetNS(ns host.NetNS, argv ...string) ([]byte, error) {
	if _, err := exec.LookPath(argv[0]); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ns.Path != "" && !ns.Init {
		argv = append([]string{"nsenter", "--net=" + ns.Path, "--"}, argv...)
	}
	return exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
}
