package installer

import (
	"encoding/json"
	"fmt"
	"path/filepath"
)

// Chaining is what the config file the runtime uses says about metabind:
// what `metabindctl doctor` checks. It is read the way Install reads it.
type Chaining struct {
	File    string   // the file the runtime loads (the first of the conf dir)
	Types   []string // its plugins' types, in order
	Primary string   // the first plugin's type: the one that sets up the pod's network
	// Entries counts metabind's entries; Last says one is the last plugin.
	Entries int
	Last    bool
	// PodAnnotations says the last metabind entry declares the
	// io.kubernetes.cri.pod-annotations capability.
	PodAnnotations bool
	// Bypass is why Primary's datapath skips netfilter (metabind's redirect
	// then sees no pod traffic); "" when it does not.
	Bypass string
}

// Inspect reads the file in confDir the runtime uses. ErrNoConfig means
// there is none.
func Inspect(confDir string) (Chaining, error) {
	var c Chaining
	names, err := primaryConf(confDir)
	if err != nil {
		return c, err
	}
	c.File = filepath.Join(confDir, names[0])
	data, _, err := readFile(c.File)
	if err != nil {
		return c, err
	}
	list, err := loadConf(c.File, data)
	if err != nil {
		return c, err
	}
	c.Primary = list.primary()
	c.Bypass = bypassesNetfilter[c.Primary]
	for i, p := range list.plugins {
		t, _ := typeOf(p)
		c.Types = append(c.Types, t)
		if t != pluginType {
			continue
		}
		c.Entries++
		c.Last = i == len(list.plugins)-1
		c.PodAnnotations, err = declares(p, podAnnotations)
		if err != nil {
			return c, fmt.Errorf("%s: plugins[%d]: %w", c.File, i, err)
		}
	}
	return c, nil
}

// declares reports whether a plugin entry declares capability true.
func declares(plugin json.RawMessage, capability string) (bool, error) {
	o, err := parseObject(plugin)
	if err != nil {
		return false, err
	}
	raw, ok := o.get("capabilities")
	if !ok {
		return false, nil
	}
	var caps map[string]any
	if err := json.Unmarshal(raw, &caps); err != nil {
		return false, fmt.Errorf(`"capabilities" is not an object: %w`, err)
	}
	return caps[capability] == true, nil
}
