package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ctdoctor/ctdoctor/analyze"
)

func newFindingsCmd(stdout io.Writer) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "findings",
		Short: "List every finding ctdoctor can report: its stable id, severities and title",
		Long: `findings lists the catalogue of findings: the stable ids that the JSON report's
findings[].id, the exporter's finding metrics and alert rules key on, with
the severities each can have and what it means.`,
		Example: `  ctdoctor findings
  ctdoctor findings -o json | jq -r '.findings[].id'`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cat := analyze.Catalogue()
			switch output {
			case "json":
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					Schema   string                `json:"schema"`
					Findings []analyze.FindingSpec `json:"findings"`
				}{"ctdoctor.findings/v1", cat})
			case "text":
				tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSEVERITIES\tWHAT IT MEANS")
				for _, f := range cat {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", f.ID, strings.Join(f.Severities, ","), f.Title)
				}
				return tw.Flush()
			}
			return &exitError{code: 2, err: fmt.Errorf("-o must be text or json, not %q", output), help: "ctdoctor findings"}
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	_ = c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]cobra.Completion{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return c
}
