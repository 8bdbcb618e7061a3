package aws

import (
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// ErrUnavailable: STS could not be asked or could not answer now
// (connection refused or reset, DNS, TLS, the call's timeout, 5xx, 429, or
// an error STS marks as transient: Throttling, IDPCommunicationError). A
// retry later may succeed; the responder answers 503.
var ErrUnavailable = errors.New("aws sts unavailable")

// Denied is STS's refusal (a 4xx that is not transient): the web identity
// token or the request was rejected (InvalidIdentityToken,
// ExpiredTokenException, ValidationError, ...) or the role's trust policy does
// not let the token's subject assume it (AccessDenied). A retry of the same
// request gets the same answer; the responder answers 403 with Message.
type Denied struct {
	Status  int    // HTTP status of STS's answer
	Code    string // STS's error code: "AccessDenied", "InvalidIdentityToken", ...
	Message string // STS's message
}

func (d *Denied) Error() string {
	code := d.Code
	if code == "" {
		code = http.StatusText(d.Status)
	}
	return fmt.Sprintf("refused by aws sts (%d %s): %s", d.Status, code, d.Message)
}

// transientCodes are STS error codes sent with a 4xx that mean "not now"
// rather than "no": throttling, and STS failing to reach the identity
// provider's keys (the AWS SDKs retry IDPCommunicationError).
var transientCodes = []string{"Throttling", "ThrottlingException", "RequestLimitExceeded", "IDPCommunicationError"}

// maxErrorMessage bounds how much of STS's message is kept.
const maxErrorMessage = 1024

// stsError reads an error answer, <ErrorResponse><Error><Code/><Message/>,
// and returns its code and message, or the status text for a body without
// one.
func stsError(status int, body []byte) (code, message string) {
	var e struct {
		XMLName xml.Name `xml:"ErrorResponse"`
		Error   struct {
			Code    string `xml:"Code"`
			Message string `xml:"Message"`
		} `xml:"Error"`
	}
	if xml.Unmarshal(body, &e) == nil {
		code, message = strings.TrimSpace(e.Error.Code), strings.TrimSpace(e.Error.Message)
	}
	if message == "" {
		message = code
	}
	if message == "" {
		message = http.StatusText(status) + " (no STS error in the answer)"
	}
	if len(message) > maxErrorMessage {
		message = message[:maxErrorMessage] + "..."
	}
	return strings.ToValidUTF8(code, "?"), strings.ToValidUTF8(message, "?")
}

func transient(code string) bool { return slices.Contains(transientCodes, code) }
