package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctdoctor/ctdoctor/apply"
)

type historyOptions struct {
	stateDir string
	output   string
}

func newHistoryCmd(stdout io.Writer) *cobra.Command {
	o := &historyOptions{}
	c := &cobra.Command{
		Use:   "history",
		Short: "List the applies: id, time, plan, state",
		Long: `history lists every apply recorded in the state directory, oldest first,
with its id (for rollback and apply --confirm), when it ran, the plan's
steps, and its state: applied, confirmed, reverted (not confirmed in time),
rolled back, failed (its changes were undone), rollback failed, or
interrupted (the process died part way: run ctdoctor rollback ID).`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return runHistory(o, stdout)
		},
	}
	f := c.Flags()
	f.StringVar(&o.stateDir, "state-dir", apply.DefaultStateDir, "`DIR` holding the journals")
	f.StringVarP(&o.output, "output", "o", "text", "output format: text or json")
	return c
}

func runHistory(o *historyOptions, stdout io.Writer) error {
	if o.output != "text" && o.output != "json" {
		return &exitError{code: 2, err: fmt.Errorf("-o must be text or json, not %q", o.output)}
	}
	entries, err := apply.History(o.stateDir)
	if err != nil {
		return err
	}
	if o.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Schema  string        `json:"schema"`
			Applies []apply.Entry `json:"applies"`
		}{"ctdoctor.history/v1", entries})
	}
	if len(entries) == 0 {
		fmt.Fprintf(stdout, "No applies recorded in %s.\n", o.stateDir)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tSTATE\tNETNS\tCHANGES\tPLAN")
	for _, e := range entries {
		state := e.State
		switch {
		case e.Overdue:
			state += " (unconfirmed, window ended: not reverted)"
		case e.AwaitingConfirmation:
			state += " (unconfirmed until " + e.ConfirmBy.Local().Format(time.TimeOnly) + ")"
		}
		t := "-"
		if !e.Time.IsZero() {
			t = e.Time.Local().Format("2006-01-02 15:04:05")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", e.ID, t, state, e.NetNS, e.Changed, e.Summary)
		if e.Error != "" {
			fmt.Fprintf(tw, "\t\t\t\t\t  %s\n", e.Error)
		}
	}
	return tw.Flush()
}
