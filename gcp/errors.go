package gcp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// ErrUnavailable: Google could not be asked or could not answer now
// (connection refused or reset, DNS, TLS, the call's timeout, 5xx, 429). A
// retry later may succeed; the responder answers 503 with Retry-After.
var ErrUnavailable = errors.New("google token service unavailable")

// Denied is Google's refusal (a 4xx other than 429): the subject token or
// the request was rejected (STS: invalid_grant, invalid_target,
// invalid_request, ...) or the principal may not impersonate the service
// account (IAM: PERMISSION_DENIED). A retry of the same request gets the same
// answer; the responder answers 403 with Message.
type Denied struct {
	Status  int    // HTTP status of Google's answer
	Code    string // Google's error code: STS "invalid_grant", ...; IAM "PERMISSION_DENIED", ...
	Message string // Google's message (STS error_description, IAM error.message)
}

func (d *Denied) Error() string {
	code := d.Code
	if code == "" {
		code = http.StatusText(d.Status)
	}
	return fmt.Sprintf("refused by google (%d %s): %s", d.Status, code, d.Message)
}

// maxErrorMessage bounds how much of Google's message is kept.
const maxErrorMessage = 1024

// googleError reads an error answer in either of Google's formats: OAuth's
// (STS) {"error":"invalid_grant","error_description":"..."} or the Google
// API one (IAM) {"error":{"code":403,"message":"...","status":"PERMISSION_DENIED"}}.
// It returns the code and message, or the status text for a body in neither.
func googleError(status int, body []byte) (code, message string) {
	var e struct {
		Error       json.RawMessage `json:"error"`
		Description string          `json:"error_description"`
	}
	if json.Unmarshal(body, &e) == nil && len(e.Error) > 0 {
		var oauth string
		var api struct {
			Message string `json:"message"`
			Status  string `json:"status"`
		}
		switch {
		case json.Unmarshal(e.Error, &oauth) == nil:
			code, message = oauth, e.Description
		case json.Unmarshal(e.Error, &api) == nil:
			code, message = api.Status, api.Message
		}
	}
	if message == "" {
		message = code
	}
	if message == "" {
		message = http.StatusText(status) + " (no Google error in the answer)"
	}
	if len(message) > maxErrorMessage {
		message = message[:maxErrorMessage] + "..."
	}
	return code, strings.ToValidUTF8(message, "?")
}
