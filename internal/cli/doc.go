// Package cli holds ctdoctor's commands: one file per command, each turning
// flags into an options struct, calling into the domain packages and
// rendering the result. No diagnosis logic lives here.
package cli
