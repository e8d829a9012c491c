package sim

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
)

//go:embed scenarios/*.yaml
var builtinFS embed.FS

// Builtin describes one built-in scenario.
type Builtin struct {
	Name        string
	Description string
}

// Builtins lists the built-in scenarios, sorted by name.
func Builtins() []Builtin {
	ents, _ := fs.ReadDir(builtinFS, "scenarios")
	var out []Builtin
	for _, e := range ents {
		name := strings.TrimSuffix(e.Name(), ".yaml")
		sc, err := BuiltinScenario(name)
		if err != nil {
			out = append(out, Builtin{Name: name, Description: "(broken: " + err.Error() + ")"})
			continue
		}
		out = append(out, Builtin{Name: name, Description: sc.Description})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// BuiltinSource returns a built-in scenario's YAML.
func BuiltinSource(name string) ([]byte, error) {
	if name == "" || strings.ContainsAny(name, "/\\.") {
		return nil, fmt.Errorf("no built-in scenario %q", name)
	}
	data, err := builtinFS.ReadFile(path.Join("scenarios", name+".yaml"))
	if err != nil {
		return nil, fmt.Errorf("no built-in scenario %q (built-ins: %s)", name, builtinNames())
	}
	return data, nil
}

// BuiltinScenario parses a built-in scenario.
func BuiltinScenario(name string) (*Scenario, error) {
	data, err := BuiltinSource(name)
	if err != nil {
		return nil, err
	}
	return ParseScenario(name+".yaml", data)
}

func builtinNames() string {
	ents, _ := fs.ReadDir(builtinFS, "scenarios")
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	return strings.Join(names, ", ")
}

// Load returns the scenario a user named: a file path if one exists (or
// the name has a path separator or a .yaml/.yml suffix), else a built-in.
func Load(nameOrPath string) (*Scenario, error) {
	if _, err := os.Stat(nameOrPath); err == nil {
		return LoadScenario(nameOrPath)
	} else if strings.ContainsAny(nameOrPath, "/\\") || strings.HasSuffix(nameOrPath, ".yaml") || strings.HasSuffix(nameOrPath, ".yml") {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("scenario file %s does not exist (built-ins: %s)", nameOrPath, builtinNames())
		}
		return nil, err
	}
	data, err := BuiltinSource(nameOrPath)
	if err != nil {
		return nil, fmt.Errorf("%q is neither a scenario file nor a built-in scenario (built-ins: %s; see ctdoctor simulate --list)", nameOrPath, builtinNames())
	}
	return ParseScenario(nameOrPath+".yaml", data)
}
