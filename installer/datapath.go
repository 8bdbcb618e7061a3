package installer

import "fmt"

// bypassesNetfilter lists the primary plugin types whose pod datapath skips
// netfilter, with the reason. metabind redirects pod traffic to the metadata
// address with an iptables DNAT rule; behind these plugins pod packets never
// reach that rule, so chaining metabind would look fine and protect nothing.
// Docs point here: add a type with its reason when one is found.
var bypassesNetfilter = map[string]string{
	"cilium-cni": "Cilium's eBPF host-routing datapath bypasses netfilter, so metabind's redirect cannot see pod traffic",
}

// checkDatapath refuses a primary plugin metabind cannot work behind, or with
// force returns the warning to give instead.
func checkDatapath(primary string, force bool) (warning string, err error) {
	why, bad := bypassesNetfilter[primary]
	switch {
	case !bad:
		return "", nil
	case force:
		return fmt.Sprintf("warning: chaining metabind behind %s anyway (--force): %s", primary, why), nil
	default:
		return "", fmt.Errorf("refusing to chain metabind behind %s: %s; --force chains it anyway", primary, why)
	}
}
