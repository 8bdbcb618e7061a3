// Command metabind is the chained CNI plugin. See the plugin package.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/metabind/metabind/plugin"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	skel.PluginMainFuncs(plugin.New().Funcs(), plugin.SupportedVersions, "metabind "+version+": binds pod IPs to pod identity for the metadata responder")
}
