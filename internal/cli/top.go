package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctdoctor/ctdoctor/internal/top"
	"github.com/ctdoctor/ctdoctor/watch"
)

type topOptions struct {
	netns     []string
	allNetNS  bool
	interval  time.Duration
	listEvery time.Duration
	polling   bool
	once      bool
	output    string
	color     string
	sort      string
}

// Bounds of top's flags.
const (
	topMinInterval     = 100 * time.Millisecond
	topDefaultInterval = time.Second
	topDefaultList     = 30 * time.Second
	// topOnceWait bounds how long --once waits for the first diagnosis,
	// beyond two refreshes (rates need two counter samples).
	topOnceWait = 30 * time.Second
)

// openWatch starts the live data of `ctdoctor top`.
func openWatch(ctx context.Context, o *topOptions) (watch.Source, error) {
	return watch.Open(ctx, o.netns, o.allNetNS, watch.Options{Interval: o.interval, ListEvery: o.listEvery, Polling: o.polling})
}

func newTopCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &topOptions{}
	c := &cobra.Command{
		Use:   "top",
		Short: "Watch the conntrack table live: usage, rates, breakdowns, findings",
		Long: `top shows a network namespace's conntrack table live, refreshed every
--interval, on one terminal screen (80×24 is enough, over SSH too):

  - the verdict of the last full diagnosis, a usage gauge against
    nf_conntrack_max and the time until the table is full at its recent
    growth; new entries, drops, early drops and insert failures per second;
    sparklines of usage and drops since top started;
  - the entries by TCP state and protocol, the top services, sources and
    destinations, each row with its change since the previous refresh;
  - the kernel log's "table full, dropping packet" events as they arrive;
  - the findings, and the fix of the one you select.

Between full listings of the table (every --list-every) the kernel's
conntrack events keep the counts current, so watching a 250k-entry table
costs little. When the kernel drops events (its buffer overflowed), top
lists the whole table at every refresh for a while, then tries events
again; the top line says which mode it is in, and why.

Keys: q quits, ? shows the help, s sorts the tables (entries, change,
name), / filters their rows, n and p switch namespace, f lists the findings
(enter shows the selected one's fix). A deleted namespace stays on screen,
marked GONE. NO_COLOR (or --color never) turns colours off.

--once prints one frame and exits, as does output to a pipe or a file:
as text at the terminal's width (or $COLUMNS), or with -o json as the
frame's JSON (one object per namespace). It waits for the rates (two
counter samples) and the first diagnosis, up to 30 s more.

Run it as root: listing entries and following events need CAP_NET_ADMIN.

Exit status: 0 when top ends (q, ctrl+c, SIGTERM) or --once printed its
frames, 1 on errors, 2 on usage errors.`,
		Example: `  ctdoctor top                                  # this namespace, refreshed every second
  ctdoctor top --netns web1 --netns web2        # two namespaces: n and p switch between them
  ctdoctor top --all-netns                      # every namespace, found again as they come and go
  ctdoctor top --interval 5s --list-every 2m    # a quieter refresh on a busy host
  ctdoctor top --polling                        # list the whole table at every refresh (no events)
  ctdoctor top --once                           # print one frame and exit
  ctdoctor top --once -o json | jq .count       # the frame as JSON, for scripts
  NO_COLOR=1 ctdoctor top                       # no colours: bold and reverse video only`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(stdout); err != nil {
				return usageError(cmd, err)
			}
			return runTop(cmd.Context(), o, stdout, stderr)
		},
	}
	f := c.Flags()
	f.StringArrayVar(&o.netns, "netns", nil, "network namespace to watch: a `NAME` from /run/netns, a path, or a PID (repeatable; default: the caller's)")
	f.BoolVar(&o.allNetNS, "all-netns", false, "watch every network namespace of the host, found again as they come and go")
	f.DurationVar(&o.interval, "interval", topDefaultInterval, "time between refreshes of the screen and of the rates (at least 100ms)")
	f.DurationVar(&o.listEvery, "list-every", topDefaultList, "time between full listings of the table, which rebuild the breakdowns and the diagnosis")
	f.BoolVar(&o.polling, "polling", false, "list the whole table at every refresh instead of following the kernel's conntrack events")
	f.BoolVar(&o.once, "once", false, "print one frame and exit (also when the output is not a terminal)")
	f.StringVarP(&o.output, "output", "o", "text", "output of --once: text or json")
	f.StringVar(&o.color, "color", "auto", "colour: auto (on a terminal, unless NO_COLOR is set), always or never")
	f.StringVar(&o.sort, "sort", "entries", "initial order of the tables' rows: entries, change or name (the s key cycles)")
	_ = c.RegisterFlagCompletionFunc("netns", completeNetNS)
	_ = c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	_ = c.RegisterFlagCompletionFunc("color", completeColor)
	_ = c.RegisterFlagCompletionFunc("sort", cobra.FixedCompletions([]string{"entries", "change", "name"}, cobra.ShellCompDirectiveNoFileComp))
	return c
}

// validate checks the flags; every error it returns is a usage error.
func (o *topOptions) validate(stdout io.Writer) error {
	switch {
	case o.interval < topMinInterval:
		return fmt.Errorf("--interval %s: want at least %s", o.interval, topMinInterval)
	case o.listEvery < o.interval:
		return fmt.Errorf("--list-every %s: want at least --interval (%s)", o.listEvery, o.interval)
	case o.output != "text" && o.output != "json":
		return fmt.Errorf("-o must be text or json, not %q", o.output)
	case o.output == "json" && !o.once && isTerminal(stdout):
		return errors.New("-o json prints one frame: add --once")
	case o.allNetNS && len(o.netns) > 0:
		return errors.New("--netns and --all-netns are alternatives: --all-netns already watches every namespace")
	}
	for _, n := range o.netns {
		if n == "" {
			return errors.New("--netns: an empty value")
		}
	}
	if _, ok := top.ParseSort(o.sort); !ok {
		return fmt.Errorf("--sort must be entries, change or name, not %q", o.sort)
	}
	if _, err := useColor(o.color, stdout); err != nil {
		return err
	}
	return nil
}

func runTop(ctx context.Context, o *topOptions, stdout, stderr io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	once := o.once || !isTerminal(stdout)
	if once {
		// The screen handles SIGINT and SIGTERM itself; --once stops on them.
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
		defer stop()
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src, err := openWatch(wctx, o)
	if err != nil {
		return err
	}
	defer src.Close()
	color, _ := useColor(o.color, stdout)
	sortBy, _ := top.ParseSort(o.sort)
	if once {
		colors := top.Plain
		if color {
			colors = top.Color
		}
		err := top.Once(ctx, src, stdout, top.OnceOptions{Width: terminalWidth(stdout), Colors: colors,
			JSON: o.output == "json", Wait: 2*o.interval + topOnceWait})
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil // stopped by a signal before a frame was complete
		}
		return err
	}
	colors := top.Mono
	if color {
		colors = top.Color
	}
	var out io.Writer
	if f, ok := stdout.(*os.File); ok {
		out = f
	}
	return top.Run(ctx, src, top.Options{Interval: o.interval, Colors: colors, Sort: sortBy}, nil, out)
}
