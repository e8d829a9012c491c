package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctdoctor/ctdoctor/apply"
	"github.com/ctdoctor/ctdoctor/render"
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
	// The PLAN summary is the last column when the table fits the width;
	// otherwise it goes under its row, wrapped, like the row's error.
	width := render.Width(stdout)
	layout := func(withPlan bool) []string {
		var tb strings.Builder
		tw := tabwriter.NewWriter(&tb, 0, 0, 2, ' ', 0)
		head := "ID\tTIME\tSTATE\tNETNS\tCHANGES"
		if withPlan {
			head += "\tPLAN"
		}
		fmt.Fprintln(tw, head)
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
			row := fmt.Sprintf("%s\t%s\t%s\t%s\t%d", e.ID, t, state, e.NetNS, e.Changed)
			if withPlan {
				row += "\t" + e.Summary
			}
			fmt.Fprintln(tw, row)
		}
		tw.Flush()
		rows := strings.Split(strings.TrimSuffix(tb.String(), "\n"), "\n")
		for i := range rows {
			rows[i] = strings.TrimRight(rows[i], " ")
		}
		return rows
	}
	rows := layout(true)
	withPlan := true
	for _, r := range rows {
		if render.VisibleWidth(r) > width {
			rows, withPlan = layout(false), false
			break
		}
	}
	for i, row := range rows {
		fmt.Fprintln(stdout, row)
		if i == 0 {
			continue
		}
		e := entries[i-1]
		if !withPlan {
			for _, l := range render.Wrap(e.Summary, width, "  ", "  ") {
				fmt.Fprintln(stdout, l)
			}
		}
		if e.Error != "" {
			for _, l := range render.Wrap(e.Error, width, "  ! ", "    ") {
				fmt.Fprintln(stdout, l)
			}
		}
	}
	return nil
}
