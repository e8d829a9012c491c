// Command ctdoctor diagnoses and fixes a Linux host's connection-tracking
// table ("nf_conntrack: table full, dropping packet").
package main

import (
	"os"

	"github.com/ctdoctor/ctdoctor/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
