package installer

import (
	"encoding/json"
	"fmt"
)

// podAnnotations is the capability through which containerd hands metabind
// the pod's annotations (runtimeConfig "io.kubernetes.cri.pod-annotations").
const podAnnotations = "io.kubernetes.cri.pod-annotations"

// entry returns metabind's entry for the conflist: conf (default
// {"type":"metabind"}), which must be a JSON object of type metabind, with the
// pod-annotations capability added to whatever capabilities it declares.
func entry(conf json.RawMessage) (json.RawMessage, error) {
	if len(conf) == 0 {
		conf = json.RawMessage(`{"type":"` + pluginType + `"}`)
	}
	o, err := parseObject(conf)
	if err != nil {
		return nil, fmt.Errorf("plugin conf: %w", err)
	}
	if t, err := o.str("type"); err != nil || t != pluginType {
		return nil, fmt.Errorf(`plugin conf: "type" must be %q (this is metabind's own entry in the conflist), got %s`, pluginType, conf)
	}
	var caps object
	if raw, ok := o.get("capabilities"); ok {
		if caps, err = parseObject(raw); err != nil {
			return nil, fmt.Errorf(`plugin conf: "capabilities" is not an object: %w`, err)
		}
	}
	caps = caps.set(podAnnotations, json.RawMessage("true"))
	return o.set("capabilities", caps.compact()).compact(), nil
}
