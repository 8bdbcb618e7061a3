package responder

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/metabind/metabind/aws"
	"github.com/metabind/metabind/gcp"
	"github.com/metabind/metabind/responder/metrics"
)

// The clouds' errors, as their clients wrap them, map to a few reasons.
func TestExchangeReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want metrics.Reason
	}{
		{nil, metrics.Success},
		{fmt.Errorf("%w: sts: %w", gcp.ErrUnavailable, context.DeadlineExceeded), metrics.Timeout},
		{fmt.Errorf("%w: sts: connection refused", gcp.ErrUnavailable), metrics.Unavailable},
		{fmt.Errorf("%w: sts: 503", aws.ErrUnavailable), metrics.Unavailable},
		{fmt.Errorf("iam: %w", &gcp.Denied{Status: 403, Code: "PERMISSION_DENIED"}), metrics.Denied},
		{fmt.Errorf("sts: %w", &gcp.Denied{Status: 400, Code: "invalid_grant"}), metrics.Invalid},
		{fmt.Errorf("sts: %w", &aws.Denied{Status: 403, Code: "AccessDenied"}), metrics.Denied},
		{fmt.Errorf("sts: %w", &aws.Denied{Status: 400, Code: "InvalidIdentityToken"}), metrics.Invalid},
		{errors.New("sts: unreadable answer"), metrics.Other},
	} {
		if got := exchangeReason(tc.err); got != tc.want {
			t.Errorf("exchangeReason(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}
