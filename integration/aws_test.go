package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/metabind/metabind/integration/fakeaws"
	"github.com/metabind/metabind/integration/kubeapi"
)

// The address on the node where pods reach the stand-in S3.
const fakeAWSAddr = "10.197.99.2"

// AWS in Kubernetes mode, as EKS IRSA without the webhook: the KSA's
// eks.amazonaws.com/role-arn names the role, the pod-bound token (audience
// sts.amazonaws.com) is exchanged at STS AssumeRoleWithWebIdentity, and the
// unchanged aws-sdk-go-v2 default chain in the pod finds the credentials on
// IMDSv2 and signs an S3 request the stand-in accepts. The stand-in STS
// checks the token against the API server's JWKS, its audience and expiry,
// and a trust table of which sub may assume which role.
func TestAWSWebIdentity(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.88.0/24"})
	n.list = withMetabindKeys(t, n.list, map[string]any{"containerCredentialsAddress": "169.254.170.23:80"})
	n.run(t, "ip", "addr", "add", fakeAWSAddr+"/32", "dev", "lo")
	c := kubeapi.Start(t, t.TempDir(), kubeapi.NetNS(n.ns.Path()))
	fa := fakeaws.Start(t, t.TempDir(), fakeaws.Options{
		Issuer: c.Issuer,
		JWKS: func() ([]byte, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return c.AdminClient.CoreV1().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
		},
		Region: "eu-west-3", ListenAddr: "0.0.0.0:0", NetNS: n.ns.Path(), CertIPs: []net.IP{net.ParseIP(fakeAWSAddr)},
	})
	c.GrantAudience("sts.amazonaws.com")
	const (
		reader    = "arn:aws:iam::111122223333:role/reader"
		writer    = "arn:aws:iam::111122223333:role/writer"
		untrusted = "arn:aws:iam::111122223333:role/untrusted"
	)
	for ksa, role := range map[string]string{"reader": reader, "writer": writer, "untrusted": untrusted, "norole": "", "batch": reader} {
		ann := map[string]string{}
		if role != "" {
			ann["eks.amazonaws.com/role-arn"] = role
		}
		c.CreateServiceAccount("payments", ksa, ann)
		if role != "" && ksa != "untrusted" {
			fa.Trust(role, "system:serviceaccount:payments:"+ksa)
		}
	}
	n.startResponder(t, fmt.Sprintf(`project: {id: test-project, numericId: "424242424242"}
node: {name: %s, zone: eu-west-3a}
issuer: {url: %s, tokenLifetime: 10m}
identities: []
kubernetes: {kubeconfig: %s}
aws: {region: eu-west-3, stsURL: %s, caFile: %s}
limits: {requestsPerSecond: 10000, burst: 100000}
`, c.NodeName, issuerURL, c.NodeKubeconfig, fa.STSURL, fa.CAFile))
	s3URL := fmt.Sprintf("https://%s:%d", fakeAWSAddr, fa.Port)

	add := func(name, ksa string) *pod {
		t.Helper()
		apiPod := c.CreatePod("payments", name, ksa, c.NodeName)
		p, err := n.addPodWithID(n.list, newPodNS(t), randomID(), "payments", name, string(apiPod.UID))
		if err != nil {
			t.Fatalf("ADD %s: %v", name, err)
		}
		return p
	}
	// sdk runs aws-sdk-go-v2's default chain in the pod, with no AWS
	// environment but the stand-ins' CA (and env).
	sdk := func(p *pod, env ...string) (awsAnswer, error) {
		cmd := exec.Command("nsenter", "--net="+p.ns.Path(), "--", awsClient, "-s3", s3URL)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "AWS_CA_BUNDLE=" + fa.CAFile}, env...)
		out, err := cmd.Output()
		var a awsAnswer
		if jerr := json.Unmarshal(out, &a); jerr != nil && err == nil {
			err = jerr
		}
		if err != nil {
			return a, fmt.Errorf("awsclient in %s: %v: %s", p.name, err, a.Error)
		}
		return a, nil
	}

	r1, w1 := add("reader-1", "reader"), add("writer-1", "writer")
	t.Run("IMDSv2: each pod its role's credentials, accepted by S3", func(t *testing.T) {
		keys := map[string]string{}
		for _, tc := range []struct {
			p    *pod
			role string
		}{{r1, reader}, {w1, writer}} {
			a, err := sdk(tc.p)
			if err != nil {
				t.Fatal(err)
			}
			role, ok := fa.KeyInfo(a.AccessKeyID)
			if !ok || role != tc.role || !a.Listed {
				t.Fatalf("%s: key %s of role %q (known %v), S3 listed %v, provider %q; want %s and an accepted request", tc.p.name, a.AccessKeyID, role, ok, a.Listed, a.Source, tc.role)
			}
			keys[tc.p.name] = a.AccessKeyID
			t.Logf("%s: credentials from %s", tc.p.name, a.Source)
		}
		if keys["reader-1"] == keys["writer-1"] {
			t.Fatal("two roles, one key")
		}
	})

	t.Run("container credentials API: the SDK's full-URI provider", func(t *testing.T) {
		a, err := sdk(r1, "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.23/v1/credentials")
		if err != nil {
			t.Fatal(err)
		}
		role, ok := fa.KeyInfo(a.AccessKeyID)
		if !ok || role != reader || !a.Listed {
			t.Fatalf("key %s of role %q (known %v), S3 listed %v, provider %q; want %s and an accepted request", a.AccessKeyID, role, ok, a.Listed, a.Source, reader)
		}
		t.Logf("reader-1: credentials from %s", a.Source)
		// Another pod's session token in Authorization: refused.
		_, tokW := do(t, w1, tokenRequest(t))
		req, _ := http.NewRequest(http.MethodGet, "http://169.254.170.23/v1/credentials", nil)
		req.Header.Set("Authorization", tokW)
		if code, body := do(t, r1, req); code != 403 {
			t.Errorf("container API with another pod's token: %d %q, want 403", code, body)
		}
	})

	t.Run("IMDSv2 session tokens: bound to the pod, required, TTL bounds", func(t *testing.T) {
		tokenOf := func(p *pod, ttl string) (int, string) {
			req, _ := http.NewRequest(http.MethodPut, "http://"+metadataIP+"/latest/api/token", nil)
			if ttl != "" {
				req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", ttl)
			}
			return do(t, p, req)
		}
		get := func(p *pod, token string) int {
			req, _ := http.NewRequest(http.MethodGet, "http://"+metadataIP+"/latest/meta-data/iam/security-credentials/", nil)
			if token != "" {
				req.Header.Set("X-aws-ec2-metadata-token", token)
			}
			code, _ := do(t, p, req)
			return code
		}
		code, tokA := tokenOf(r1, "60")
		if code != 200 || get(r1, tokA) != 200 {
			t.Fatalf("pod A with its own token: %d", code)
		}
		if got := get(w1, tokA); got != 401 {
			t.Errorf("pod B with pod A's token: %d, want 401", got)
		}
		if got := get(r1, ""); got != 401 {
			t.Errorf("no token: %d, want 401", got)
		}
		for _, ttl := range []string{"", "0", "21601", "x"} {
			if code, _ := tokenOf(r1, ttl); code != 400 {
				t.Errorf("TTL %q: %d, want 400", ttl, code)
			}
		}
		if code, _ := tokenOf(r1, "21600"); code != 200 {
			t.Errorf("TTL 21600: %d, want 200", code)
		}
		req, _ := http.NewRequest(http.MethodPut, "http://"+metadataIP+"/latest/api/token", nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		req.Header.Set("X-Forwarded-For", "10.0.0.1")
		if code, _ := do(t, r1, req); code != 403 {
			t.Errorf("X-Forwarded-For: %d, want 403", code)
		}
	})

	t.Run("no role: 404; not trusted: 403 with STS's message", func(t *testing.T) {
		for name, want := range map[string]int{"norole-1": 404, "untrusted-1": 403} {
			p := add(name, strings.TrimSuffix(name, "-1"))
			_, tok := do(t, p, tokenRequest(t))
			req, _ := http.NewRequest(http.MethodGet, "http://"+metadataIP+"/latest/meta-data/iam/security-credentials/untrusted", nil)
			req.Header.Set("X-aws-ec2-metadata-token", tok)
			code, body := do(t, p, req)
			if code != want || (want == 403 && !strings.Contains(body, "AccessDenied")) {
				t.Errorf("%s: %d %q, want %d", name, code, body, want)
			}
		}
	})

	t.Run("10 pods of one role: one exchange", func(t *testing.T) {
		before := fa.Calls()
		for i := range 10 {
			p := add(fmt.Sprintf("batch-%d", i), "batch")
			if a, err := sdk(p); err != nil || !a.Listed {
				t.Fatalf("batch-%d: %+v %v", i, a, err)
			}
		}
		// The untrusted pod above may still be refused meanwhile (a refusal
		// is not cached: its prefetch asks again); those calls are not
		// this KSA's.
		after := fa.Calls()
		got := after.STS - before.STS - (after.Denied - before.Denied)
		t.Logf("10 pods of one KSA and role: %d STS exchange(s)", got)
		if got != 1 {
			t.Fatalf("%d STS calls for 10 pods of one KSA and role, want 1", got)
		}
	})

	t.Run("IP reuse: a reused address never yields the previous owner's role", func(t *testing.T) {
		// One veth and address (from the network without metabind) passes
		// between a reader pod and a writer pod, metabind alone run for each
		// owner as the runtime runs it: between an owner's ADD and its DEL
		// the address gets that owner's role, never the other's, and after
		// the DEL none.
		holder := n.addUnboundPod(t, "payments", "holder")
		prev := mustJSON(t, holder.result)
		owners := []struct{ name, ksa, role string }{{"reuse-reader", "reader", reader}, {"reuse-writer", "writer", writer}}
		uids := map[string]string{}
		for _, o := range owners {
			uids[o.name] = string(c.CreatePod("payments", o.name, o.ksa, c.NodeName).UID)
		}
		credsRole := func() (string, string) {
			resp, err := nsHTTPClient(holder.ns, nil).Do(tokenRequest(t))
			if err != nil {
				return "", err.Error()
			}
			tok := readAll(resp)
			if resp.StatusCode != 200 {
				return "", fmt.Sprintf("token: %d %q", resp.StatusCode, tok)
			}
			req, _ := http.NewRequest(http.MethodGet, "http://"+metadataIP+"/latest/meta-data/iam/security-credentials/", nil)
			req.Header.Set("X-aws-ec2-metadata-token", tok)
			code, name := do(t, holder, req)
			if code != 200 {
				return "", fmt.Sprintf("role name: %d %q", code, name)
			}
			req, _ = http.NewRequest(http.MethodGet, "http://"+metadataIP+"/latest/meta-data/iam/security-credentials/"+name, nil)
			req.Header.Set("X-aws-ec2-metadata-token", tok)
			code, body := do(t, holder, req)
			if code != 200 {
				return "", fmt.Sprintf("credentials: %d %q", code, body)
			}
			var cr struct{ AccessKeyId string }
			json.Unmarshal([]byte(body), &cr)
			role, _ := fa.KeyInfo(cr.AccessKeyId)
			return role, ""
		}
		const cycles = 10
		for k := range cycles {
			o := owners[k%2]
			cid := randomID()
			args := fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=payments;K8S_POD_NAME=%s;K8S_POD_UID=%s", o.name, uids[o.name])
			if err := n.metabindOnly("ADD", cid, holder, args, prev); err != nil {
				t.Fatalf("cycle %d: ADD: %v", k, err)
			}
			for range 3 {
				if got, why := credsRole(); got != o.role {
					t.Fatalf("cycle %d (%s): credentials of role %q (%s), want %s\nDNAT:\n%s", k, o.name, got, why, o.role, n.natRules(t))
				}
			}
			if err := n.metabindOnly("DEL", cid, holder, args, prev); err != nil {
				t.Fatalf("cycle %d: DEL: %v", k, err)
			}
			if got, _ := credsRole(); got != "" {
				t.Fatalf("cycle %d: after %s's DEL the address still gets role %q", k, o.name, got)
			}
		}
		t.Logf("%d owner changes on one address, 4 requests each: no wrong role", cycles)
	})

	t.Run("STS down: 503, then recovery", func(t *testing.T) {
		fa.SetDown(true)
		c.CreateServiceAccount("payments", "late", map[string]string{"eks.amazonaws.com/role-arn": writer})
		fa.Trust(writer, "system:serviceaccount:payments:late")
		p := add("late-1", "late")
		_, tok := do(t, p, tokenRequest(t))
		creds := func() int {
			req, _ := http.NewRequest(http.MethodGet, "http://"+metadataIP+"/latest/meta-data/iam/security-credentials/writer", nil)
			req.Header.Set("X-aws-ec2-metadata-token", tok)
			code, _ := do(t, p, req)
			return code
		}
		if code := creds(); code != 503 {
			t.Fatalf("credentials while STS is down: %d, want 503", code)
		}
		fa.SetDown(false)
		start := time.Now()
		for creds() != 200 {
			if time.Since(start) > 30*time.Second {
				t.Fatal("no credentials 30 s after STS came back")
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("served %v after STS came back", time.Since(start).Round(10*time.Millisecond))
	})
}

// awsAnswer is what integration/awsclient prints.
type awsAnswer struct {
	AccessKeyID string `json:"accessKeyID"`
	Source      string `json:"source"`
	Listed      bool   `json:"listed"`
	Error       string `json:"error"`
}

// tokenRequest is IMDSv2's session token PUT for 60 s.
func tokenRequest(t *testing.T) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+metadataIP+"/latest/api/token", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
	return req
}

// do sends req from inside p and returns the status and body.
func do(t *testing.T, p *pod, req *http.Request) (int, string) {
	t.Helper()
	resp, err := nsHTTPClient(p.ns, nil).Do(req)
	if err != nil {
		t.Fatalf("%s %s from %s: %v", req.Method, req.URL.Path, p.name, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, strings.TrimSpace(b.String())
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return strings.TrimSpace(b.String())
		}
	}
}
