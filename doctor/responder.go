package doctor

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/metabind/metabind/plugin"
)

// checkResponder: the responder answers HTTP on every responder address
// the plugin recorded (where it DNATs pod traffic), from the node.
func checkResponder(ctx context.Context, n *node) Result {
	s := n.readStore()
	var addrs []netip.AddrPort
	for _, b := range s.bases {
		if !slices.Contains(addrs, b.Responder) {
			addrs = append(addrs, b.Responder)
		}
	}
	note := ""
	if len(addrs) == 0 {
		addrs = []netip.AddrPort{netip.MustParseAddrPort(plugin.DefaultResponderAddress)}
		note = " (the default: no base recorded)"
	}
	client := &http.Client{Timeout: n.Timeout}
	var answered []string
	for _, a := range addrs {
		code, _, err := get(ctx, client, "http://"+a.String()+"/")
		if err != nil {
			return failed(fmt.Sprintf("start metabind-responder on this node (its DaemonSet pod, or the service) with --listen including %s; its log says why it stopped", a),
				"no answer on %s%s: %v; pods get no metadata", a, note, err)
		}
		answered = append(answered, fmt.Sprintf("%s (HTTP %d)", a, code))
	}
	return ok("answers on %s%s", strings.Join(answered, ", "), note)
}

// checkReadyz: the responder's admin server reports ready; otherwise the
// failing check lines.
func checkReadyz(ctx context.Context, n *node) Result {
	client := &http.Client{Timeout: n.Timeout}
	url := "http://" + n.AdminAddress + "/readyz"
	code, body, err := get(ctx, client, url)
	if err != nil {
		return failed("start metabind-responder; its --admin-listen must be "+n.AdminAddress+" (or give doctor --admin-address)",
			"%s: %v", url, err)
	}
	if code != http.StatusOK {
		var failing []string
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "[-]") {
				failing = append(failing, l)
			}
		}
		return failed("act on the failing lines (the other checks here name the fixes); the responder's log says more",
			"%s: HTTP %d: %s", url, code, strings.Join(failing, "; "))
	}
	return ok("%s: HTTP 200", url)
}

// get does one GET and returns its status and (bounded) body.
func get(ctx context.Context, client *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(body), err
}
