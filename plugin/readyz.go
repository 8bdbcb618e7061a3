package plugin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// ReadyzTimeout bounds STATUS's question to the responder: the runtime
// calls STATUS every few seconds, and an agent that takes longer than this
// to say it is ready is not.
const ReadyzTimeout = time.Second

// readyzMaxBody is how much of a not-ready answer is read for its "[-]"
// lines; readyzMaxHeader bounds the status line and headers.
const (
	readyzMaxBody   = 64 << 10
	readyzMaxHeader = 16 << 10
)

// responderReady asks metabind-responder's admin server at addr (IP:port)
// whether it is ready: GET /readyz answers 200 when every check passes.
// The error says why not: the admin server is not reachable, or the
// checks that failed (its "[-]" lines).
//
// The question is one HTTP/1.0 GET on a fresh connection, spoken here
// rather than through net/http: that package (and crypto/tls with it)
// doubled the plugin's binary and added about half a millisecond of
// package initialisation to every exec, ADD and VERSION included, for a
// request STATUS alone makes. HTTP/1.0 with "Connection: close" means no
// chunked body and no keep-alive: the body is what comes before EOF.
func responderReady(ctx context.Context, addr string) error {
	url := "http://" + addr + "/readyz"
	ctx, cancel := context.WithTimeout(ctx, ReadyzTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metabind-responder is not reachable: GET %s: %w", url, err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	req := "GET /readyz HTTP/1.0\r\nHost: " + addr + "\r\nUser-Agent: metabind\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return fmt.Errorf("metabind-responder is not reachable: GET %s: %w", url, err)
	}
	r := bufio.NewReader(conn)
	code, status, err := readStatus(r)
	if err != nil {
		return fmt.Errorf("metabind-responder is not reachable: GET %s: %w", url, err)
	}
	if code == 200 {
		return nil
	}
	var failed []string
	sc := bufio.NewScanner(io.LimitReader(r, readyzMaxBody))
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "[-]") {
			failed = append(failed, line)
		}
	}
	if len(failed) == 0 {
		return fmt.Errorf("metabind-responder is not ready: GET %s: %s", url, status)
	}
	return fmt.Errorf("metabind-responder is not ready: %s", strings.Join(failed, "; "))
}

// readStatus reads an HTTP/1.x answer's status line and skips its headers,
// leaving r at the body. status is the line without "HTTP/1.x ", e.g.
// "503 Service Unavailable".
func readStatus(r *bufio.Reader) (code int, status string, err error) {
	limit := readyzMaxHeader
	line := func() (string, error) {
		var b []byte
		for {
			frag, err := r.ReadSlice('\n')
			b = append(b, frag...)
			if limit -= len(frag); limit < 0 {
				return "", errors.New("answer headers too long")
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err == io.EOF && len(b) > 0 {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				return "", err
			}
			return strings.TrimRight(string(b), "\r\n"), nil
		}
	}
	first, err := line()
	if err != nil {
		return 0, "", fmt.Errorf("no HTTP answer: %w", err)
	}
	proto, status, _ := strings.Cut(first, " ")
	codeStr, _, _ := strings.Cut(status, " ")
	code, cerr := strconv.Atoi(codeStr)
	if !strings.HasPrefix(proto, "HTTP/1.") || len(codeStr) != 3 || cerr != nil || code < 100 {
		return 0, "", fmt.Errorf("not an HTTP/1.x answer: %q", truncate(first, 80))
	}
	for {
		h, err := line()
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // before the blank line
		}
		if err != nil {
			return 0, "", fmt.Errorf("answer headers: %w", err)
		}
		if h == "" {
			return code, status, nil
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
