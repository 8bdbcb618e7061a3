package installer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// pluginType is the "type" of metabind's entry, and its binary's name.
const pluginType = "metabind"

// conflist is a network configuration list as runtimes load it: the
// top-level members in their order, and the plugins as their own bytes.
type conflist struct {
	top     object
	plugins []json.RawMessage
}

// parseConflist reads a .conflist, refusing what libcni would refuse and a
// missing cniVersion.
func parseConflist(data []byte) (*conflist, error) {
	top, err := parseNetwork(data)
	if err != nil {
		return nil, err
	}
	raw, ok := top.get("plugins")
	if !ok {
		return nil, errors.New(`no "plugins"`)
	}
	var plugins []json.RawMessage
	if err := json.Unmarshal(raw, &plugins); err != nil {
		return nil, fmt.Errorf(`"plugins" is not an array: %w`, err)
	}
	if len(plugins) == 0 {
		return nil, errors.New(`"plugins" is empty`)
	}
	for i, p := range plugins {
		if _, err := typeOf(p); err != nil {
			return nil, fmt.Errorf("plugins[%d]: %w", i, err)
		}
	}
	return &conflist{top: top, plugins: plugins}, nil
}

// fromConf turns a single-plugin .conf (or .json) into a list the way
// libcni's ConfListFromConf does: the list takes the conf's cniVersion and
// name, and the whole conf object is its one plugin.
func fromConf(data []byte) (*conflist, error) {
	top, err := parseNetwork(data)
	if err != nil {
		return nil, err
	}
	if _, err := typeOf(data); err != nil {
		return nil, err
	}
	version, _ := top.get("cniVersion")
	name, _ := top.get("name")
	return &conflist{
		top:     object{{"cniVersion", version}, {"name", name}},
		plugins: []json.RawMessage{top.compact()},
	}, nil
}

// parseNetwork reads a config's top-level object and checks the members
// every network config needs.
func parseNetwork(data []byte) (object, error) {
	top, err := parseObject(data)
	if err != nil {
		return nil, err
	}
	if _, err := top.str("name"); err != nil {
		return nil, err
	}
	v, err := top.str("cniVersion")
	if err == nil && v == "" {
		err = errors.New(`empty "cniVersion"`)
	}
	return top, err
}

// typeOf returns a plugin entry's "type".
func typeOf(plugin json.RawMessage) (string, error) {
	o, err := parseObject(plugin)
	if err != nil {
		return "", err
	}
	t, err := o.str("type")
	if err == nil && t == "" {
		err = errors.New(`empty "type"`)
	}
	return t, err
}

func isMetabind(plugin json.RawMessage) bool {
	t, _ := typeOf(plugin)
	return t == pluginType
}

// primary returns the type of the plugin that sets up the pod's network.
func (c *conflist) primary() string {
	t, _ := typeOf(c.plugins[0])
	return t
}

// has reports whether the list names metabind.
func (c *conflist) has() bool { return len(c.withoutMetabind()) != len(c.plugins) }

// withoutMetabind returns the plugins other than metabind.
func (c *conflist) withoutMetabind() []json.RawMessage {
	var kept []json.RawMessage
	for _, p := range c.plugins {
		if !isMetabind(p) {
			kept = append(kept, p)
		}
	}
	return kept
}

// chain makes want the one metabind entry, last in the list, and reports
// whether that changed the list.
func (c *conflist) chain(want json.RawMessage) bool {
	next := append(c.withoutMetabind(), want)
	changed := len(next) != len(c.plugins)
	for i := 0; !changed && i < len(next); i++ {
		changed = !jsonEqual(next[i], c.plugins[i])
	}
	c.plugins = next
	return changed
}

// unchain removes every metabind entry and reports whether there was one.
func (c *conflist) unchain() bool {
	kept := c.withoutMetabind()
	changed := len(kept) != len(c.plugins)
	c.plugins = kept
	return changed
}

// encode returns the list indented, as CNI agents write their files.
func (c *conflist) encode() []byte {
	var list bytes.Buffer
	list.WriteByte('[')
	for i, p := range c.plugins {
		if i > 0 {
			list.WriteByte(',')
		}
		list.Write(p)
	}
	list.WriteByte(']')
	var out bytes.Buffer
	_ = json.Indent(&out, c.top.set("plugins", list.Bytes()).compact(), "", "  ")
	out.WriteByte('\n')
	return out.Bytes()
}
