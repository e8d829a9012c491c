package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// Version is set at build time with -ldflags "-X github.com/ctdoctor/ctdoctor/internal/cli.Version=…".
var Version = "dev"

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Main runs ctdoctor with args and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "ctdoctor: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
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
CAP_NET_ADMIN. Without root you still get the sizing and whatever is readable.`,
		Example: `  ctdoctor                                  # diagnose this host (the caller's netns)
  ctdoctor --netns web1                      # a named netns (/run/netns/web1), a path or a PID
  ctdoctor --all-netns                       # every namespace's count against the global max
  ctdoctor -o json | jq .findings            # the stable JSON report (schema ctdoctor.report/v1)
  conntrack -L | ctdoctor --from -           # analyse a listing (conntrack -L, -o extended, /proc, -o save)
  ctdoctor snapshot -o host.tar.gz           # capture this host for offline analysis
  ctdoctor --snapshot host.tar.gz            # the same report, offline`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDoctor(cmd.Context(), d, stdout, stderr)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	d.bind(root)
	root.AddCommand(newSnapshotCmd(stdout, stderr), newVersionCmd(stdout))
	root.AddCommand(newSimulateCmd(stdout, stderr))
	return root
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print ctdoctor's version",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintf(stdout, "ctdoctor %s\n", Version)
		},
	}
}

// isTerminal reports whether f is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func terminalWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	return 100
}

// useColor decides on colour from --color and the environment (NO_COLOR, TERM=dumb).
func useColor(mode string, w io.Writer) (bool, error) {
	switch strings.ToLower(mode) {
	case "always":
		return true, nil
	case "never":
		return false, nil
	case "", "auto":
		if _, ok := os.LookupEnv("NO_COLOR"); ok || os.Getenv("TERM") == "dumb" {
			return false, nil
		}
		return isTerminal(w), nil
	}
	return false, fmt.Errorf("--color must be auto, always or never, not %q", mode)
}
