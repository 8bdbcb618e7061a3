package server

import (
	"io"
	"net/http"
)

// Response is what a flavour answers through: the response writer, which
// records the status and any internal error for the request log.
type Response struct {
	http.ResponseWriter
	status int
	err    error
	// reason is why a caller was refused (a resolver's or source's
	// refusal), for the request's log line.
	reason string
}

func (w *Response) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *Response) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// WriteString writes s without copying it where the connection can.
func (w *Response) WriteString(s string) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return io.WriteString(w.ResponseWriter, s)
}

// Status is the status answered: 200 when the handler wrote nothing.
func (w *Response) Status() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

func (w *Response) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Error answers code with msg as a plain text body.
func (w *Response) Error(code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Del("ETag")
	w.WriteHeader(code)
	w.Write([]byte(msg + "\n"))
}

// NotFound answers 404.
func (w *Response) NotFound() { w.Error(http.StatusNotFound, "not found") }

// Forbidden answers 403 with msg.
func (w *Response) Forbidden(msg string) { w.Error(http.StatusForbidden, msg) }

// BadRequest answers 400 with msg.
func (w *Response) BadRequest(msg string) { w.Error(http.StatusBadRequest, msg) }

// FailWith answers 500 with msg as the body and logs err on the request's
// line (at error level), for APIs whose clients are told why (the EKS Pod
// Identity agent's).
func (w *Response) FailWith(msg string, err error) {
	w.err = err
	w.Error(http.StatusInternalServerError, msg)
}

// Fail answers 500 and logs err on the request's line (at error level);
// the caller learns nothing of it.
func (w *Response) Fail(err error) {
	w.err = err
	w.Error(http.StatusInternalServerError, "internal error")
}
