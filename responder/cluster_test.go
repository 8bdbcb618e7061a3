package responder

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"cloud.google.com/go/compute/metadata"
)

const (
	clusterUID    = "4f0a6c1e2b3d4c5e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9012345678abcd"
	clusterConfig = testConfig + "cluster: {name: prod-1, location: us-central1, uid: " + clusterUID + "}\n"
)

// clusterHandler is the responder for testConfig with a cluster section.
func clusterHandler(t *testing.T, config string) *Responder {
	t.Helper()
	cfg, err := ParseConfig([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	return newHandlerFromConfig(t, cfg, nil)
}

// checkServedBy fails unless rec carries GCE's response headers, once each.
func checkServedBy(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	for name, want := range map[string]string{"Metadata-Flavor": "Google", "Server": "Metadata Server for VM"} {
		if got := rec.Header().Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

// TestClusterAttributes: with a cluster section, instance/attributes/
// serves cluster-name, cluster-location and cluster-uid as GKE's metadata
// server does, to callers with an identity only.
func TestClusterAttributes(t *testing.T) {
	h := clusterHandler(t, clusterConfig)
	const attrs = "/computeMetadata/v1/instance/attributes"
	for _, tc := range []struct {
		name   string
		target string
		ip     string            // default apiIP
		header map[string]string // default flavor
		status int
		ctype  string // checked when set
		body   string // exact, when status is 200
	}{
		{name: "listing", target: attrs + "/", status: 200, ctype: textType, body: "cluster-location\ncluster-name\ncluster-uid\n"},
		{name: "listing no slash", target: attrs, status: 200, ctype: textType, body: "cluster-location\ncluster-name\ncluster-uid\n"},
		{name: "listing alt=json", target: attrs + "/?alt=json", status: 200, ctype: jsonType, body: `["cluster-location","cluster-name","cluster-uid"]`},
		{name: "recursive", target: attrs + "/?recursive=true", status: 200, ctype: jsonType,
			body: `{"cluster-location":"us-central1","cluster-name":"prod-1","cluster-uid":"` + clusterUID + `"}`},
		{name: "cluster-name", target: attrs + "/cluster-name", status: 200, ctype: textType, body: "prod-1"},
		{name: "cluster-location", target: attrs + "/cluster-location", status: 200, ctype: textType, body: "us-central1"},
		{name: "cluster-uid", target: attrs + "/cluster-uid", status: 200, ctype: textType, body: clusterUID},
		{name: "cluster-name json", target: attrs + "/cluster-name?alt=json", status: 200, ctype: jsonType, body: `"prod-1"`},
		{name: "cluster-name from the workload identity", target: attrs + "/cluster-name", ip: workerIP, status: 200, body: "prod-1"},

		{name: "scalar with slash", target: attrs + "/cluster-name/", status: 404},
		{name: "unknown attribute", target: attrs + "/kube-env", status: 404},
		{name: "no flavor", target: attrs + "/cluster-name", header: map[string]string{}, status: 403},
		{name: "xff", target: attrs + "/cluster-name", header: map[string]string{"Metadata-Flavor": "Google", "X-Forwarded-For": "1.2.3.4"}, status: 403},
		{name: "no identity", target: attrs + "/cluster-name", ip: otherIP, status: 404},
		{name: "no identity listing", target: attrs + "/", ip: otherIP, status: 404},
		{name: "unbound", target: attrs + "/cluster-uid", ip: unboundIP, status: 404},
		{name: "store broken", target: attrs + "/cluster-uid", ip: brokenIP, status: 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip, header := tc.ip, tc.header
			if ip == "" {
				ip = apiIP
			}
			if header == nil {
				header = flavor
			}
			rec := do(t, h, "GET", tc.target, ip, header)
			if rec.Code != tc.status {
				t.Errorf("status = %d, want %d (body %q)", rec.Code, tc.status, rec.Body)
			}
			checkServedBy(t, rec)
			if tc.ctype != "" && rec.Header().Get("Content-Type") != tc.ctype {
				t.Errorf("Content-Type = %q, want %q", rec.Header().Get("Content-Type"), tc.ctype)
			}
			if tc.status == 200 && rec.Body.String() != tc.body {
				t.Errorf("body = %q, want %q", rec.Body, tc.body)
			}
		})
	}
}

// TestClusterAttributesRecursive: instance/?recursive=true and the whole
// tree carry the attributes under "attributes", keys as they are.
func TestClusterAttributesRecursive(t *testing.T) {
	want := map[string]string{"cluster-location": "us-central1", "cluster-name": "prod-1", "cluster-uid": clusterUID}
	for name, tc := range map[string]struct {
		config string
		want   map[string]string
	}{
		"cluster":         {clusterConfig, want},
		"cluster, no uid": {testConfig + "cluster: {name: prod-1, location: us-central1}\n", map[string]string{"cluster-location": "us-central1", "cluster-name": "prod-1"}},
		"no cluster":      {testConfig, map[string]string{}},
	} {
		t.Run(name, func(t *testing.T) {
			h := clusterHandler(t, tc.config)
			var instance struct {
				Attributes map[string]string `json:"attributes"`
				Name       string            `json:"name"`
			}
			rec := do(t, h, "GET", "/computeMetadata/v1/instance/?recursive=true", apiIP, flavor)
			if rec.Code != 200 || rec.Header().Get("Content-Type") != jsonType {
				t.Fatalf("instance tree: %d %q %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
			}
			checkServedBy(t, rec)
			if err := json.Unmarshal(rec.Body.Bytes(), &instance); err != nil {
				t.Fatal(err)
			}
			if instance.Attributes == nil || !reflect.DeepEqual(instance.Attributes, tc.want) || instance.Name != "node-1" {
				t.Errorf("instance tree %s: attributes %#v, want %#v", rec.Body, instance.Attributes, tc.want)
			}

			var root struct {
				Instance struct {
					Attributes map[string]string `json:"attributes"`
				} `json:"instance"`
			}
			rec = do(t, h, "GET", "/computeMetadata/v1/?recursive=true&alt=json", apiIP, flavor)
			if err := json.Unmarshal(rec.Body.Bytes(), &root); err != nil || !reflect.DeepEqual(root.Instance.Attributes, tc.want) {
				t.Errorf("root tree %s: %v", rec.Body, err)
			}

			// The listing names exactly what is served.
			rec = do(t, h, "GET", "/computeMetadata/v1/instance/attributes/", apiIP, flavor)
			var listed []string
			for line := range strings.Lines(rec.Body.String()) {
				listed = append(listed, strings.TrimSuffix(line, "\n"))
			}
			if rec.Code != 200 || len(listed) != len(tc.want) {
				t.Errorf("listing: %d %q", rec.Code, rec.Body)
			}
			for _, attr := range []string{"cluster-location", "cluster-name", "cluster-uid"} {
				rec := do(t, h, "GET", "/computeMetadata/v1/instance/attributes/"+attr, apiIP, flavor)
				v, ok := tc.want[attr]
				switch {
				case ok && (rec.Code != 200 || rec.Body.String() != v):
					t.Errorf("%s = %d %q, want %q", attr, rec.Code, rec.Body, v)
				case !ok && rec.Code != 404:
					t.Errorf("%s = %d %q, want 404", attr, rec.Code, rec.Body)
				}
			}
		})
	}
}

// TestClusterGoClient: Go's metadata client reads the attributes and the
// universe domain.
func TestClusterGoClient(t *testing.T) {
	srv := httptest.NewServer(clusterHandler(t, clusterConfig))
	defer srv.Close()
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(srv.URL, "http://"))
	ctx := context.Background()
	c := metadata.NewClient(srv.Client())

	attrs, err := c.InstanceAttributesWithContext(ctx)
	if err != nil || !reflect.DeepEqual(attrs, []string{"cluster-location", "cluster-name", "cluster-uid"}) {
		t.Errorf("InstanceAttributes = %q, %v", attrs, err)
	}
	for attr, want := range map[string]string{"cluster-name": "prod-1", "cluster-location": "us-central1", "cluster-uid": clusterUID} {
		if v, err := c.InstanceAttributeValueWithContext(ctx, attr); err != nil || v != want {
			t.Errorf("%s = %q, %v; want %q", attr, v, err, want)
		}
	}
	if _, err := c.InstanceAttributeValueWithContext(ctx, "kube-env"); !errors.As(err, new(metadata.NotDefinedError)) {
		t.Errorf("kube-env: %v, want NotDefinedError", err)
	}
	if v, err := c.GetWithContext(ctx, "universe/universe-domain"); err != nil || v != "googleapis.com" {
		t.Errorf("universe-domain = %q, %v", v, err)
	}
}

// TestServerHeader: every response carries Server: Metadata Server for VM
// (and Metadata-Flavor: Google), the public documents and refusals
// included.
func TestServerHeader(t *testing.T) {
	h := clusterHandler(t, clusterConfig)
	const v1 = "/computeMetadata/v1"
	for _, tc := range []struct {
		method, target, ip string
		header             map[string]string
		status             int
	}{
		{"GET", "/", unboundIP, map[string]string{}, 200},
		{"GET", "/openid/v1/jwks", unboundIP, map[string]string{}, 200},
		{"GET", v1 + "/instance/attributes/cluster-name", apiIP, flavor, 200},
		{"GET", v1 + "/instance/service-accounts/default/token", apiIP, flavor, 200},
		{"GET", v1 + "/instance/service-accounts/default/identity?audience=https://aud.example", apiIP, flavor, 200},
		{"GET", v1 + "/nowhere", apiIP, flavor, 404},
		{"GET", v1 + "/instance/attributes/cluster-name", unboundIP, flavor, 404},
		{"GET", v1 + "/instance/service-accounts/default/token", otherIP, flavor, 404},
		{"GET", v1 + "/instance/attributes/cluster-name", apiIP, map[string]string{}, 403},
		{"GET", "/", apiIP, map[string]string{"X-Forwarded-For": "1.2.3.4"}, 403},
		{"GET", v1 + "/instance/service-accounts/default/identity", apiIP, flavor, 400},
		{"POST", v1 + "/instance/attributes/cluster-name", apiIP, flavor, 405},
		{"GET", v1 + "/instance/attributes/cluster-name", brokenIP, flavor, 503},
	} {
		rec := do(t, h, tc.method, tc.target, tc.ip, tc.header)
		if rec.Code != tc.status {
			t.Errorf("%s %s from %s: %d, want %d (%q)", tc.method, tc.target, tc.ip, rec.Code, tc.status, rec.Body)
		}
		checkServedBy(t, rec)
	}
}
