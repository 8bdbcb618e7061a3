package plugin

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// ReadyzTimeout bounds STATUS's question to the responder: the runtime
// calls STATUS every few seconds, and an agent that takes longer than this
// to say it is ready is not.
const ReadyzTimeout = time.Second

// readyzClient asks the node-local admin server only: no proxy from the
// environment, no connection kept.
var readyzClient = &http.Client{
	Timeout:   ReadyzTimeout,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// responderReady asks metabind-responder's admin server at addr (IP:port)
// whether it is ready: GET /readyz answers 200 when every check passes.
// The error says why not: the admin server is not reachable, or the
// checks that failed (its "[-]" lines).
func responderReady(ctx context.Context, addr string) error {
	url := "http://" + addr + "/readyz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := readyzClient.Do(req)
	if err != nil {
		return fmt.Errorf("metabind-responder is not reachable: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var failed []string
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 64<<10))
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "[-]") {
			failed = append(failed, line)
		}
	}
	if len(failed) == 0 {
		return fmt.Errorf("metabind-responder is not ready: GET %s: %s", url, resp.Status)
	}
	return fmt.Errorf("metabind-responder is not ready: %s", strings.Join(failed, "; "))
}
