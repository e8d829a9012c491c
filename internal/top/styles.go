package top

import (
	"charm.land/lipgloss/v2"

	"github.com/ctdoctor/ctdoctor/analyze"
)

// Colors says how the view may style its text.
type Colors int

const (
	// Plain output has no escape sequences at all (NO_COLOR in --once,
	// output to a pipe or a file).
	Plain Colors = iota
	// Mono uses bold, faint and reverse video but no colour: the screen
	// under NO_COLOR, where a selection must still show.
	Mono
	// Color adds the 16 basic ANSI colours, which every terminal and
	// terminal multiplexer shows.
	Color
)

// styles are the view's text styles for one Colors mode.
type styles struct {
	title    lipgloss.Style // the top line
	bold     lipgloss.Style
	dim      lipgloss.Style
	selected lipgloss.Style // the selected finding
	good     lipgloss.Style
	info     lipgloss.Style
	warn     lipgloss.Style
	crit     lipgloss.Style
	full     lipgloss.Style // the usage bar of a table 90% full or more
	growth   lipgloss.Style // a row that grew
	shrink   lipgloss.Style // a row that shrank
	key      lipgloss.Style // a key name in the footer and help
}

func newStyles(c Colors) styles {
	s := lipgloss.NewStyle()
	switch c {
	case Plain:
		return styles{title: s, bold: s, dim: s, selected: s, good: s, info: s, warn: s, crit: s, full: s, growth: s, shrink: s, key: s}
	case Mono:
		return styles{title: s.Reverse(true), bold: s.Bold(true), dim: s.Faint(true), selected: s.Reverse(true),
			good: s.Bold(true), info: s.Bold(true), warn: s.Bold(true), crit: s.Bold(true).Reverse(true), full: s.Bold(true),
			growth: s, shrink: s, key: s.Bold(true)}
	}
	return styles{
		title:    s.Reverse(true).Bold(true),
		bold:     s.Bold(true),
		dim:      s.Faint(true),
		selected: s.Reverse(true),
		good:     s.Foreground(lipgloss.Green).Bold(true),
		info:     s.Foreground(lipgloss.Cyan).Bold(true),
		warn:     s.Foreground(lipgloss.Yellow).Bold(true),
		crit:     s.Foreground(lipgloss.BrightWhite).Background(lipgloss.Red).Bold(true),
		full:     s.Foreground(lipgloss.Red).Bold(true),
		growth:   s.Foreground(lipgloss.Yellow),
		shrink:   s.Foreground(lipgloss.Green),
		key:      s.Foreground(lipgloss.Cyan).Bold(true),
	}
}

// sev styles a severity or verdict level.
func (s styles) sev(level string) lipgloss.Style {
	switch level {
	case analyze.Critical:
		return s.crit
	case analyze.Warning:
		return s.warn
	case analyze.Info:
		return s.info
	case analyze.Healthy:
		return s.good
	}
	return s.bold
}
