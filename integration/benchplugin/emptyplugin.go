package main

// emptyPluginType is the chained plugin that does nothing, by the name the
// conflist's "type" finds it under.
const emptyPluginType = "bench-empty"

// emptyPluginSource is the smallest chained CNI plugin: ADD prints
// prevResult back in the netconf's version, VERSION answers, every other
// verb succeeds silently. No CNI library, only encoding/json and os, so
// that what the chain pays for it is exec, the Go runtime's start and
// libcni's own work for one more plugin: the floor under metabind's added
// time, which no chained Go plugin can go below.
const emptyPluginSource = `package main

import (
	"encoding/json"
	"os"
)

func main() {
	switch os.Getenv("CNI_COMMAND") {
	case "ADD":
		var conf struct {
			CNIVersion json.RawMessage            ` + "`json:\"cniVersion\"`" + `
			PrevResult map[string]json.RawMessage ` + "`json:\"prevResult\"`" + `
		}
		if err := json.NewDecoder(os.Stdin).Decode(&conf); err != nil || conf.PrevResult == nil {
			os.Stderr.WriteString("bench-empty: no prevResult on stdin\n")
			os.Exit(1)
		}
		conf.PrevResult["cniVersion"] = conf.CNIVersion
		if err := json.NewEncoder(os.Stdout).Encode(conf.PrevResult); err != nil {
			os.Exit(1)
		}
	case "VERSION":
		os.Stdout.WriteString(` + "`" + `{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}` + "`" + `)
	}
}
`

// buildEmptyPlugin builds the empty chained plugin into dir, where the
// CNI path finds it.
func buildEmptyPlugin(dir string) error {
	_, err := buildGo(dir, emptyPluginType, emptyPluginSource)
	return err
}
