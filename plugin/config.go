// Package plugin is the metabind chained CNI plugin: on ADD it records which
// pod owns each of its IPs and redirects that pod's metadata traffic to the
// responder; on DEL it removes both.
package plugin

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/metabind/metabind/redirect"
)

// Defaults for the netconf keys.
const (
	DefaultStateDir         = "/var/lib/metabind"
	DefaultMetadataAddress  = "169.254.169.254:80"
	DefaultResponderAddress = "169.254.169.252:988"
	DefaultLogFile          = "/var/log/metabind/cni.log"
	DefaultLogMaxSizeMB     = 10
	DefaultLogMaxBackups    = 3
	// DefaultAdminAddress is metabind-responder's --admin-listen default,
	// where STATUS asks /readyz when requireResponder is set.
	DefaultAdminAddress = "127.0.0.1:9988"
	// DefaultResponderAddress6 is used when metadataAddress6 is set and
	// responderAddress6 is not.
	DefaultResponderAddress6 = "[fd00:ec2::252]:988"
)

// PodAnnotationsCapability is the runtimeConfig key through which containerd
// and CRI-O pass a pod's annotations to plugins that declare it.
const PodAnnotationsCapability = "io.kubernetes.cri.pod-annotations"

// NetConf is metabind's entry in a conflist.
type NetConf struct {
	types.NetConf

	StateDir         string `json:"stateDir,omitempty"`
	MetadataAddress  string `json:"metadataAddress,omitempty"`
	ResponderAddress string `json:"responderAddress,omitempty"`
	LogFile          string `json:"logFile,omitempty"`
	// Backend programs the redirect: "iptables", "nftables" or "auto"
	// (nftables where the kernel has it). Empty: redirect.DefaultBackend.
	Backend string `json:"backend,omitempty"`
	// LogMaxSizeMB and LogMaxBackups rotate logFile (logfile.go): at
	// LogMaxSizeMB it becomes logFile.1, the oldest past LogMaxBackups
	// goes. Nil: the defaults.
	LogMaxSizeMB  *int `json:"logMaxSizeMB,omitempty"`
	LogMaxBackups *int `json:"logMaxBackups,omitempty"`
	// RequireResponder makes STATUS fail while the responder's admin
	// server at AdminAddress does not answer /readyz with 200.
	RequireResponder bool   `json:"requireResponder,omitempty"`
	AdminAddress     string `json:"adminAddress,omitempty"`
	// IPv6 (dual stack): pods' IPv6 addresses are bound and redirected
	// only when metadataAddress6 is set.
	MetadataAddress6  string `json:"metadataAddress6,omitempty"`
	ResponderAddress6 string `json:"responderAddress6,omitempty"`
	// Container credentials (the EKS Pod Identity API): another address a
	// pod's traffic to is redirected like metadata traffic, to the same
	// responder address. Unset by default.
	ContainerCredentialsAddress  string `json:"containerCredentialsAddress,omitempty"`
	ContainerCredentialsAddress6 string `json:"containerCredentialsAddress6,omitempty"`

	RuntimeConfig struct {
		PodAnnotations map[string]string `json:"io.kubernetes.cri.pod-annotations,omitempty"`
	} `json:"runtimeConfig,omitempty"`

	Metadata   netip.AddrPort `json:"-"`
	Responder  netip.AddrPort `json:"-"`
	Metadata6  netip.AddrPort `json:"-"` // zero: IPv4 only
	Responder6 netip.AddrPort `json:"-"`
	// ContainerCredentials and ContainerCredentials6 are zero when unset.
	ContainerCredentials  netip.AddrPort  `json:"-"`
	ContainerCredentials6 netip.AddrPort  `json:"-"`
	Result                *current.Result `json:"-"` // prevResult, when the runtime sent one
	// ResultErr is why prevResult could not be read. ADD and CHECK refuse
	// it; DEL, which needs no prevResult, goes on without.
	ResultErr error `json:"-"`
}

// ParseConfig reads the netconf from stdin bytes, fills in defaults and
// checks every key and value. Errors name the offending key.
func ParseConfig(stdin []byte) (*NetConf, error) {
	if err := checkKeys(stdin); err != nil {
		return nil, err
	}
	return parseValues(stdin)
}

// parseValues is ParseConfig without the check for unknown keys.
func parseValues(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, fmt.Errorf("parse netconf: %w", err)
	}
	setDefaults(conf)
	for _, p := range []struct{ key, path string }{{"stateDir", conf.StateDir}, {"logFile", conf.LogFile}} {
		if !filepath.IsAbs(p.path) {
			return nil, fmt.Errorf("netconf %s %q: must be an absolute path", p.key, p.path)
		}
	}
	for _, b := range []struct {
		key      string
		value    int
		min, max int
	}{{"logMaxSizeMB", *conf.LogMaxSizeMB, 1, 1024}, {"logMaxBackups", *conf.LogMaxBackups, 0, 100}} {
		if b.value < b.min || b.value > b.max {
			return nil, fmt.Errorf("netconf %s %d: must be %d..%d", b.key, b.value, b.min, b.max)
		}
	}
	if ap, err := netip.ParseAddrPort(conf.AdminAddress); err != nil || ap.Port() == 0 {
		return nil, fmt.Errorf("netconf adminAddress %q: want IP:port of the responder's --admin-listen, e.g. %q", conf.AdminAddress, DefaultAdminAddress)
	}
	switch conf.Backend {
	case "", redirect.BackendAuto, redirect.BackendIPTables, redirect.BackendNFTables:
	default:
		return nil, fmt.Errorf("netconf backend %q: want %q, %q or %q", conf.Backend, redirect.BackendAuto, redirect.BackendNFTables, redirect.BackendIPTables)
	}
	var err error
	if conf.Metadata, err = parseAddress("metadataAddress", conf.MetadataAddress); err != nil {
		return nil, err
	}
	if conf.Responder, err = parseAddress("responderAddress", conf.ResponderAddress); err != nil {
		return nil, err
	}
	if conf.Metadata == conf.Responder {
		return nil, fmt.Errorf("netconf responderAddress %q: must differ from metadataAddress", conf.ResponderAddress)
	}
	if conf.MetadataAddress6 != "" {
		if conf.ResponderAddress6 == "" {
			conf.ResponderAddress6 = DefaultResponderAddress6
		}
		if conf.Metadata6, err = parseAddress6("metadataAddress6", conf.MetadataAddress6); err != nil {
			return nil, err
		}
		if conf.Responder6, err = parseAddress6("responderAddress6", conf.ResponderAddress6); err != nil {
			return nil, err
		}
		if conf.Metadata6 == conf.Responder6 {
			return nil, fmt.Errorf("netconf responderAddress6 %q: must differ from metadataAddress6", conf.ResponderAddress6)
		}
	} else if conf.ResponderAddress6 != "" {
		return nil, fmt.Errorf("netconf responderAddress6 %q: set metadataAddress6 too, or neither", conf.ResponderAddress6)
	}
	if conf.ContainerCredentialsAddress != "" {
		if conf.ContainerCredentials, err = parseAddress("containerCredentialsAddress", conf.ContainerCredentialsAddress); err != nil {
			return nil, err
		}
		if err := differ("containerCredentialsAddress", conf.ContainerCredentials, conf.Metadata, "metadataAddress", conf.Responder, "responderAddress"); err != nil {
			return nil, err
		}
	}
	if conf.ContainerCredentialsAddress6 != "" {
		if !conf.Metadata6.IsValid() {
			return nil, fmt.Errorf("netconf containerCredentialsAddress6 %q: set metadataAddress6 too (IPv6 is redirected only with it)", conf.ContainerCredentialsAddress6)
		}
		if conf.ContainerCredentials6, err = parseAddress6("containerCredentialsAddress6", conf.ContainerCredentialsAddress6); err != nil {
			return nil, err
		}
		if err := differ("containerCredentialsAddress6", conf.ContainerCredentials6, conf.Metadata6, "metadataAddress6", conf.Responder6, "responderAddress6"); err != nil {
			return nil, err
		}
	}
	if conf.RawPrevResult != nil {
		conf.Result, conf.ResultErr = parsePrevResult(&conf.NetConf)
	}
	return conf, nil
}

// differ refuses an extra redirected address that is the metadata or the
// responder address of its family: the base would then redirect the
// responder's own traffic, or hold the metadata address's jumps twice.
// Another port of the same IP is fine: the jumps match the port.
func differ(key string, addr, metadata netip.AddrPort, metadataKey string, responder netip.AddrPort, responderKey string) error {
	if addr == metadata {
		return fmt.Errorf("netconf %s %q: must differ from %s", key, addr, metadataKey)
	}
	if addr == responder {
		return fmt.Errorf("netconf %s %q: must differ from %s", key, addr, responderKey)
	}
	return nil
}

func setDefaults(conf *NetConf) {
	if conf.StateDir == "" {
		conf.StateDir = DefaultStateDir
	}
	if conf.MetadataAddress == "" {
		conf.MetadataAddress = DefaultMetadataAddress
	}
	if conf.ResponderAddress == "" {
		conf.ResponderAddress = DefaultResponderAddress
	}
	if conf.LogFile == "" {
		conf.LogFile = DefaultLogFile
	}
	if conf.LogMaxSizeMB == nil {
		n := DefaultLogMaxSizeMB
		conf.LogMaxSizeMB = &n
	}
	if conf.LogMaxBackups == nil {
		n := DefaultLogMaxBackups
		conf.LogMaxBackups = &n
	}
	if conf.AdminAddress == "" {
		conf.AdminAddress = DefaultAdminAddress
	}
}

// parseAddress accepts an IPv4 IP:port with a non-zero port.
func parseAddress(key, value string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(value)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("netconf %s %q: want IPv4:port, e.g. %q: %w", key, value, DefaultMetadataAddress, err)
	}
	if !ap.Addr().Is4() {
		return netip.AddrPort{}, fmt.Errorf("netconf %s %q: must be an IPv4 address (IPv6 has its own key, %s6)", key, value, key)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("netconf %s %q: port must not be 0", key, value)
	}
	return ap, nil
}

// parseAddress6 accepts an [IPv6]:port with a non-zero port.
func parseAddress6(key, value string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(value)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("netconf %s %q: want [IPv6]:port, e.g. %q: %w", key, value, "[fd00:ec2::254]:80", err)
	}
	if !ap.Addr().Is6() || ap.Addr().Is4In6() || ap.Addr().Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("netconf %s %q: must be an IPv6 address without zone", key, value)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("netconf %s %q: port must not be 0", key, value)
	}
	return ap, nil
}

func parsePrevResult(nc *types.NetConf) (*current.Result, error) {
	if err := version.ParsePrevResult(nc); err != nil {
		return nil, fmt.Errorf("netconf prevResult: %w", err)
	}
	r, err := current.NewResultFromResult(nc.PrevResult)
	if err != nil {
		return nil, fmt.Errorf("netconf prevResult: %w", err)
	}
	return r, nil
}
