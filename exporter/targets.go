package exporter

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/ctdoctor/ctdoctor/host"
)

// target is one network namespace the exporter watches.
type target struct {
	// label is the netns label value: the name given with --netns, the
	// discovered name with --all-netns, or the own namespace's name
	// ("init", or its name in /run/netns, else "self").
	label string
	// path is the nsfs file to enter ("" is the exporter's own namespace).
	path string
	// inode and created identify the namespace behind path now (0 and
	// zero when it could not be resolved).
	inode   uint64
	created time.Time
	init    bool
	// err says why the namespace could not be resolved (a named one that
	// was deleted, a PID that exited): its metrics are _up 0.
	err error
}

// key identifies a target across discoveries: the same label and the
// same namespace behind it.
func (t *target) key() string { return fmt.Sprintf("%s\x00%d", t.label, t.inode) }

// specPath is the nsfs path a --netns value names (see host.ResolveNetNS).
func specPath(spec string) (string, error) {
	switch {
	case spec == "":
		return "", nil
	case isDigits(spec):
		return "/proc/" + spec + "/ns/net", nil
	case filepath.IsAbs(spec):
		return spec, nil
	case strings.ContainsRune(spec, '/') || spec == "." || spec == "..":
		return "", fmt.Errorf("network namespace %q: not a name from /run/netns, an absolute path or a PID", spec)
	}
	return filepath.Join("/run/netns", spec), nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// discover lists the namespaces to watch now: the own one when neither
// specs nor all is given, each spec (kept, with its error, when it does
// not resolve: a namespace given by name may come back), and with all
// every namespace of the host, deduplicated by inode, at most limit of
// them. The warnings say what was left out and why.
func discover(specs []string, all bool, limit int) (out []*target, warnings []string) {
	own, ownErr := host.ResolveNetNS("")
	seen := map[uint64]bool{}
	labels := map[string]bool{}
	add := func(t *target) bool {
		// One target per namespace and per label: two series with the
		// same labels would make the scrape fail.
		if (t.inode != 0 && seen[t.inode]) || labels[t.label] {
			return false
		}
		if t.inode != 0 {
			seen[t.inode] = true
		}
		labels[t.label] = true
		if limit > 0 && len(out) >= limit {
			warnings = append(warnings, fmt.Sprintf("network namespace %s left out: more than %d namespaces (--max-netns)", t.label, limit))
			return false
		}
		out = append(out, t)
		return true
	}
	if len(specs) == 0 && !all {
		t := &target{label: "self"}
		if ownErr != nil {
			t.err = ownErr
		} else {
			t.label, t.inode, t.created, t.init = own.Name, own.Inode, own.Created, own.Init
		}
		add(t)
		return out, warnings
	}
	for _, spec := range specs {
		path, err := specPath(spec)
		t := &target{label: spec, path: path, err: err}
		if err == nil {
			ns, err := host.ResolveNetNS(spec)
			if err != nil {
				t.err = err
			} else {
				t.inode, t.created, t.init = ns.Inode, ns.Created, ns.Init
				if ownErr == nil && ns.Inode == own.Inode {
					t.path = "" // no need to switch threads for the own namespace
				}
			}
		}
		add(t)
	}
	if all {
		list, err := host.ListNetNS()
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("--all-netns: %v", err))
		}
		for _, ns := range list {
			t := &target{label: ns.Name, path: ns.Path, inode: ns.Inode, created: ns.Created, init: ns.Init}
			if ownErr == nil && ns.Inode == own.Inode {
				t.path = ""
			}
			add(t)
		}
	}
	return out, warnings
}
