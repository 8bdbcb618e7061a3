package aws_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/metabind/metabind/responder/flavour/aws"
	"github.com/metabind/metabind/responder/subject"
)

// recorder serves the handler it holds (swapped by the tests), counting
// token requests and GETs without a token.
type recorder struct {
	h            atomic.Pointer[http.Handler]
	mu           sync.Mutex
	puts, bareGo int
}

func (rc *recorder) set(h http.Handler) { rc.h.Store(&h) }

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	switch {
	case r.Method == http.MethodPut:
		rc.puts++
	case strings.HasPrefix(r.URL.Path, aws.IMDSPrefix) && r.Header.Get(aws.TokenHeader) == "":
		rc.bareGo++
	}
	rc.mu.Unlock()
	(*rc.h.Load()).ServeHTTP(w, r)
}

func (rc *recorder) counts() (puts, bare int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.puts, rc.bareGo
}

// sdkEnv is env's responder on a real listener; its client connects from
// 127.0.0.1, bound to pod A.
func sdkEnv(t *testing.T) (*env, *recorder, *httptest.Server) {
	e := newEnv(t, false)
	e.b.bind("127.0.0.1", "a", "uid-a")
	rc := &recorder{}
	rc.set(e.h)
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	return e, rc, srv
}

// noBackoff retries as the SDK does, without waiting between attempts (the
// IMDS client needs DisableDefaultMaxBackoff too).
func noBackoff() awssdk.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
	})
}

// TestSDKIMDS: aws-sdk-go-v2's IMDS client, IMDSv2 only, reads the
// region, the instance, the identity document and iam/info, and its
// ec2rolecreds provider the pod's role credentials; every GET carries a
// session token. When the responder's key changes, the client's next call
// is 401, and it fetches a new token and succeeds.
func TestSDKIMDS(t *testing.T) {
	e, rc, srv := sdkEnv(t)
	ctx := context.Background()
	client := imds.New(imds.Options{Endpoint: srv.URL, EnableFallback: awssdk.FalseTernary, Retryer: noBackoff(), DisableDefaultMaxBackoff: true})

	region, err := client.GetRegion(ctx, &imds.GetRegionInput{})
	if err != nil || region.Region != "eu-west-3" {
		t.Fatalf("GetRegion: %+v %v", region, err)
	}
	md, err := client.GetMetadata(ctx, &imds.GetMetadataInput{Path: "instance-id"})
	if err != nil {
		t.Fatalf("GetMetadata: %v", err)
	}
	id, _ := io.ReadAll(md.Content)
	md.Content.Close()
	if string(id) != testNode.InstanceID {
		t.Errorf("instance-id %q", id)
	}
	doc, err := client.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
	if err != nil {
		t.Fatalf("GetInstanceIdentityDocument: %v", err)
	}
	if doc.Region != "eu-west-3" || doc.InstanceID != testNode.InstanceID || doc.AccountID != testNode.AccountID ||
		doc.InstanceType != testNode.InstanceType || doc.AvailabilityZone != testNode.AvailabilityZone || doc.Version != "2017-09-30" {
		t.Errorf("identity document %+v", doc.InstanceIdentityDocument)
	}
	info, err := client.GetIAMInfo(ctx, &imds.GetIAMInfoInput{})
	if err != nil {
		t.Fatalf("GetIAMInfo: %v", err)
	}
	if info.Code != "Success" || info.InstanceProfileArn != "arn:aws:iam::111122223333:instance-profile/app/reader" ||
		!info.LastUpdated.Equal(t0.Add(-5*time.Minute)) {
		t.Errorf("iam/info %+v", info.IAMInfo)
	}

	creds, err := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = client }).Retrieve(ctx)
	if err != nil {
		t.Fatalf("ec2rolecreds: %v", err)
	}
	if creds.AccessKeyID != "ASIAAAAA" || creds.SecretAccessKey != "secret-AAAA" || creds.SessionToken != "session-AAAA" || !creds.CanExpire {
		t.Errorf("ec2rolecreds: %+v", creds)
	}
	if puts, bare := rc.counts(); puts != 1 || bare != 0 {
		t.Errorf("%d token requests, %d GETs without a token; want 1, 0", puts, bare)
	}

	// A restarted responder with a new key: 401, a new token, success.
	other := aws.NewIMDS(e.src, testNode, make([]byte, aws.KeySize), false)
	other.Now = e.clock
	rc.set(routed(e, other))
	if region, err := client.GetRegion(ctx, &imds.GetRegionInput{}); err != nil || region.Region != "eu-west-3" {
		t.Fatalf("GetRegion after a new key: %+v %v", region, err)
	}
	if puts, _ := rc.counts(); puts != 2 {
		t.Errorf("%d token requests after a new key, want 2", puts)
	}

	// STS unavailable: 503, which the provider reports as an error.
	e.src.set(subject.ErrUnavailable)
	client = imds.New(imds.Options{Endpoint: srv.URL, EnableFallback: awssdk.FalseTernary, Retryer: awssdk.NopRetryer{}})
	if _, err := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = client }).Retrieve(ctx); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("ec2rolecreds with the source unavailable: %v", err)
	}
}

// TestSDKContainer: aws-sdk-go-v2's container-credentials provider
// (endpointcreds) reads the pod's credentials, with no Authorization or
// with the pod's own session token; another token is 403, and a source
// that is unavailable is 500 with the reason.
func TestSDKContainer(t *testing.T) {
	e, _, srv := sdkEnv(t)
	ctx := context.Background()
	provider := func(auth string) *endpointcreds.Provider {
		return endpointcreds.New(srv.URL+aws.ContainerPrefix, func(o *endpointcreds.Options) {
			o.AuthorizationToken = auth
			o.Retryer = awssdk.NopRetryer{}
		})
	}
	creds, err := provider("").Retrieve(ctx)
	if err != nil {
		t.Fatalf("Retrieve: %v", err)
	}
	if creds.AccessKeyID != "ASIAAAAA" || creds.SecretAccessKey != "secret-AAAA" || creds.SessionToken != "session-AAAA" ||
		creds.AccountID != "111122223333" || !creds.CanExpire || !creds.Expires.Equal(t0.Add(55*time.Minute)) {
		t.Errorf("credentials %+v", creds)
	}

	tok := e.token(t, "127.0.0.1", 600)
	if creds, err := provider(tok).Retrieve(ctx); err != nil || creds.AccessKeyID != "ASIAAAAA" {
		t.Errorf("with the pod's session token: %+v %v", creds, err)
	}
	var status interface{ HTTPStatusCode() int }
	_, err = provider(e.token(t, ipB, 600)).Retrieve(ctx)
	if !errors.As(err, &status) || status.HTTPStatusCode() != 403 {
		t.Errorf("with another pod's token: %v, want 403", err)
	}

	e.src.set(subject.ErrUnavailable)
	_, err = provider("").Retrieve(ctx)
	if !errors.As(err, &status) || status.HTTPStatusCode() != 500 || !strings.Contains(err.Error(), subject.ErrUnavailable.Error()) {
		t.Errorf("source unavailable: %v, want 500 with the reason", err)
	}
}
