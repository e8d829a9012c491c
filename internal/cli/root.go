package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ctdoctor/ctdoctor/render"
	"github.com/ctdoctor/ctdoctor/sim"
)

// Version overrides the version the build recorded; set it at build time
// with -ldflags "-X github.com/ctdoctor/ctdoctor/internal/cli.Version=…".
// Left at "dev", the module version Go embedded (a release tag with
// `go install …@vX.Y.Z`, a pseudo-version when built from a clone) is shown.
var Version = "dev"

// exitError carries an exit code through cobra. Usage errors (bad flags,
// arguments or flag values) have code 2; help names the command whose
// --help explains its usage.
type exitError struct {
	code int
	err  error
	help string
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError marks err as a usage error of cmd (exit status 2).
func usageError(cmd *cobra.Command, err error) error {
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	e := &exitError{code: 2, err: err}
	if cmd != nil {
		e.help = cmd.CommandPath()
	}
	return e
}

// Main runs ctdoctor with args and returns the process exit code: 0 when
// the command did its work, 1 on errors, 2 on usage errors.
func Main(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	if ee := (*exitError)(nil); err.Error() == "" && errors.As(err, &ee) {
		return ee.code // a plugin state (ctdoctor check): all is said on stdout
	}
	fmt.Fprintf(stderr, "ctdoctor: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.code == 2 && ee.help == "" {
			if cmd, _, err := root.Find(args); err == nil {
				ee.help = cmd.CommandPath()
			}
		}
		if ee.help != "" {
			fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", ee.help)
		}
		return ee.code
	}
	return 1
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	d := &doctorOptions{}
	root := &cobra.Command{
		Use:   "ctdoctor",
		Short: "Diagnose and fix a full Linux conntrack table",
		Long: `ctdoctor tells you what fills a Linux host's connection-tracking (nf_conntrack)
table, whether it is full or about to be, why, and exactly what to change.

With no subcommand it diagnoses the host it runs on: it reads the table size,
the per-CPU counters (drop vs insert_failed vs chaintoolong), the kernel log's
"table full, dropping packet" events and every entry (streamed over netlink,
in constant memory), then prints a verdict, breakdowns and findings with fixes.

Run it as root: listing entries and reading counters over netlink need
CAP_NET_ADMIN. Without root you still get the sizing and whatever is readable.

Exit status: 0 when a report was produced (whatever its verdict), 1 on
errors, 2 on usage errors (a bad flag, argument or flag value).`,
		Example: `  ctdoctor                                  # diagnose this host (the caller's netns)
  ctdoctor --netns web1                      # a named netns (/run/netns/web1), a path or a PID
  ctdoctor --all-netns                       # every namespace's count against the global max
  ctdoctor -o json | jq .findings            # the stable JSON report (schema ctdoctor.report/v1)
  ctdoctor -o html > report.html             # one self-contained page to attach to a ticket
  conntrack -L | ctdoctor --from -           # analyse a listing (conntrack -L, -o extended, /proc, -o save)
  ctdoctor snapshot -o host.tar.gz           # capture this host for offline analysis
  ctdoctor --snapshot host.tar.gz            # the same report, offline`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d.intervalSet = cmd.Flags().Changed("interval")
			return runDoctor(cmd.Context(), d, stdout, stderr)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	d.bind(root)
	registerDoctorCompletions(root)
	root.Version = versionString()
	root.SetVersionTemplate("ctdoctor {{.Version}}\n")
	root.AddCommand(newSnapshotCmd(stdout, stderr), newVersionCmd(stdout), newFindingsCmd(stdout))
	root.AddCommand(newSimulateCmd(stdout, stderr), newPlanCmd(stdout, stderr))
	root.AddCommand(newApplyCmd(stdout, stderr), newRollbackCmd(stdout, stderr), newHistoryCmd(stdout))
	root.AddCommand(newExporterCmd(stdout, stderr), newCheckCmd(stdout, stderr))
	root.AddCommand(newTopCmd(stdout, stderr))
	// The help and completion commands exist before Execute, so that their
	// argument errors are usage errors too.
	root.SetHelpCommand(newHelpCmd())
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" && c.RunE == nil && c.Run == nil {
			// Runnable, so that 'completion SHELL-TYPO' is an argument error.
			c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
		}
	}
	usageErrors(root)
	return root
}

// usageErrors makes every command's flag and argument errors usage errors
// (exit 2).
func usageErrors(c *cobra.Command) {
	c.SetFlagErrorFunc(usageError)
	if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return usageError(cmd, err)
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		usageErrors(sub)
	}
}

// newHelpCmd is cobra's help command, with an unknown topic a usage error.
func newHelpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long:  "help prints the help of any command: ctdoctor help simulate.",
		ValidArgsFunction: func(c *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
			var out []cobra.Completion
			cmd, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), prefix) {
					out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if err != nil || cmd == nil || len(rest) > 0 {
				return usageError(c.Root(), fmt.Errorf("no help topic %q: the commands are %s", strings.Join(args, " "), commandNames(c.Root())))
			}
			cmd.InitDefaultHelpFlag()
			cmd.InitDefaultVersionFlag()
			return cmd.Help()
		},
	}
}

// commandNames lists the root's commands for messages.
func commandNames(root *cobra.Command) string {
	var names []string
	for _, c := range root.Commands() {
		if c.IsAvailableCommand() || c.Name() == "help" {
			names = append(names, c.Name())
		}
	}
	return strings.Join(names, ", ")
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print ctdoctor's version",
		Long: `version prints ctdoctor's version: the release, or the pseudo-version Go
recorded when it was built from a clone, with the commit it was built from
(marked "modified" when the working tree had local changes). 'ctdoctor
--version' prints the same.`,
		Args: cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintf(stdout, "ctdoctor %s\n", versionString())
		},
	}
}

// versionString is the version with the build's commit, from the build
// information Go embeds in the binary.
func versionString() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		info = nil
	}
	return formatVersion(Version, info)
}

// formatVersion renders override (the -ldflags Version, "dev" if unset)
// and the build information: "v1.2.0 (commit 0123456789ab, 2026-11-20T10:00:00Z,
// modified)". Without either it is "dev".
func formatVersion(override string, info *debug.BuildInfo) string {
	v := override
	if info == nil {
		return v
	}
	if v == "" || v == "dev" {
		if mv := info.Main.Version; mv != "" && mv != "(devel)" {
			v = mv
		}
	}
	var rev, at string
	modified := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return v
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	parts := []string{"commit " + rev}
	if at != "" {
		parts = append(parts, at)
	}
	if modified {
		parts = append(parts, "modified")
	}
	return fmt.Sprintf("%s (%s)", v, strings.Join(parts, ", "))
}

// registerDoctorCompletions completes the diagnosis flags' values in the
// shell ('ctdoctor completion SHELL').
func registerDoctorCompletions(c *cobra.Command) {
	for flag, fn := range map[string]cobra.CompletionFunc{
		"netns":    completeNetNS,
		"output":   cobra.FixedCompletions([]string{"text", "json", "html"}, cobra.ShellCompDirectiveNoFileComp),
		"color":    completeColor,
		"snapshot": cobra.FixedCompletions([]string{"tar.gz", "tgz"}, cobra.ShellCompDirectiveFilterFileExt),
		"root":     cobra.FixedCompletions(nil, cobra.ShellCompDirectiveFilterDirs),
		"top":      cobra.NoFileCompletions,
		"interval": cobra.NoFileCompletions,
	} {
		_ = c.RegisterFlagCompletionFunc(flag, fn)
	}
}

// completeColor completes --color.
var completeColor = cobra.FixedCompletions([]string{"auto", "always", "never"}, cobra.ShellCompDirectiveNoFileComp)

// completeNetNS completes --netns with the named namespaces of /run/netns.
func completeNetNS(_ *cobra.Command, _ []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	ents, err := os.ReadDir(netnsDir)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// netnsDir is where `ip netns` keeps named namespaces.
var netnsDir = "/run/netns"

// completeScenario completes simulate's argument: the built-in scenario
// names, or YAML files once the word looks like a path.
func completeScenario(_ *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	if !strings.ContainsAny(prefix, "./") {
		for _, b := range sim.Builtins() {
			if strings.HasPrefix(b.Name, prefix) {
				out = append(out, cobra.CompletionWithDesc(b.Name, b.Description))
			}
		}
	}
	if len(out) > 0 {
		return out, cobra.ShellCompDirectiveNoFileComp
	}
	return []cobra.Completion{"yaml", "yml"}, cobra.ShellCompDirectiveFilterFileExt
}

// isTerminal, terminalWidth and useColor are render's terminal kit: one
// place decides where text goes, how wide it may be and whether it is coloured.
func isTerminal(w io.Writer) bool { return render.IsTerminal(w) }

// terminalWidth is the terminal's width, else $COLUMNS, else 100.
func terminalWidth(w io.Writer) int { return render.Width(w) }

// useColor decides on colour from --color and the environment (NO_COLOR, TERM=dumb).
func useColor(mode string, w io.Writer) (bool, error) { return render.Color(mode, w) }
