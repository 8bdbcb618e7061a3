package responder

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metabind/metabind/responder/subject"
)

const goodConfig = `
project: {id: demo-project, numericId: "123456789012"}
node: {name: node-1, zone: us-central1-a}
issuer: {url: https://metabind.local/node-1, tokenLifetime: 30m}
identities:
  - namespace: payments
    pod: "api-*"
    serviceAccount: api
    email: api@demo-project.iam.gserviceaccount.com
    scopes: [https://www.googleapis.com/auth/cloud-platform, https://www.googleapis.com/auth/userinfo.email]
  - namespace: payments
    serviceAccount: worker
`

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Project.ID != "demo-project" || cfg.Project.NumericID != "123456789012" {
		t.Errorf("project = %+v", cfg.Project)
	}
	if cfg.Node.Name != "node-1" || cfg.Node.Zone != "us-central1-a" {
		t.Errorf("node = %+v", cfg.Node)
	}
	if cfg.Issuer.Lifetime != 30*time.Minute {
		t.Errorf("lifetime = %v", cfg.Issuer.Lifetime)
	}
	if len(cfg.Identities) != 2 {
		t.Fatalf("identities = %+v", cfg.Identities)
	}
	if got := cfg.Identities[1].Scopes; len(got) != 1 || got[0] != subject.DefaultScope {
		t.Errorf("default scopes = %v", got)
	}
	if got := cfg.Identities[1].AccountEmail(cfg.Project.ID); got != "demo-project.svc.id.goog" {
		t.Errorf("default email = %q", got)
	}
}

func TestParseConfigCluster(t *testing.T) {
	cfg, err := ParseConfig([]byte(goodConfig + "cluster: {name: prod-1, location: us-central1-a, uid: abc123}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (ClusterConfig{Name: "prod-1", Location: "us-central1-a", UID: "abc123"}); cfg.Cluster == nil || *cfg.Cluster != want {
		t.Errorf("cluster = %+v, want %+v", cfg.Cluster, want)
	}
	cfg, err = ParseConfig([]byte(goodConfig + "cluster: {name: prod-1, location: us-central1}\n"))
	if err != nil || cfg.Cluster.UID != "" {
		t.Errorf("cluster without uid: %+v, %v", cfg.Cluster, err)
	}
	if cfg, err := ParseConfig([]byte(goodConfig)); err != nil || cfg.Cluster != nil {
		t.Errorf("no cluster section: %+v, %v", cfg.Cluster, err)
	}
}

func TestParseConfigDefaultsAndForms(t *testing.T) {
	host, _ := os.Hostname()
	for name, text := range map[string]string{
		"yaml, unquoted number": `
project: {id: p, numericId: 42}
node: {zone: z}
issuer: {url: "http://127.0.0.1:8080"}
`,
		"json": `{"project": {"id": "p", "numericId": "42"}, "node": {"zone": "z"},
		          "issuer": {"url": "http://127.0.0.1:8080"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(text))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Project.NumericID != "42" {
				t.Errorf("numericId = %q", cfg.Project.NumericID)
			}
			if cfg.Node.Name != host {
				t.Errorf("node.name = %q, want host name %q", cfg.Node.Name, host)
			}
			if cfg.Issuer.Lifetime != time.Hour {
				t.Errorf("lifetime = %v", cfg.Issuer.Lifetime)
			}
			if len(cfg.Identities) != 0 {
				t.Errorf("identities = %v", cfg.Identities)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	const head = "project: {id: p, numericId: \"1\"}\nnode: {name: n, zone: z}\nissuer: {url: https://i.example}\n"
	for _, tc := range []struct{ name, text, want string }{
		{"unknown field", head + "extra: 1\n", `unknown field "extra"`},
		{"unknown nested field", "project: {id: p, numericId: \"1\", name: x}\n", `unknown field "name"`},
		{"no project id", "project: {numericId: \"1\"}\n", "project.id is required"},
		{"no numeric id", "project: {id: p}\n", "project.numericId is required"},
		{"numeric id not digits", "project: {id: p, numericId: \"12a\"}\n", "project.numericId"},
		{"numeric id negative", "project: {id: p, numericId: -1}\n", "project.numericId"},
		{"numeric id float", "project: {id: p, numericId: 1.5}\n", "project.numericId"},
		{"numeric id leading zero", "project: {id: p, numericId: \"0042\"}\n", "project.numericId: \"0042\" has a leading zero"},
		{"no zone", "project: {id: p, numericId: \"1\"}\nnode: {name: n}\n", "node.zone is required"},
		{"no issuer", "project: {id: p, numericId: \"1\"}\nnode: {name: n, zone: z}\n", "issuer.url is required"},
		{"relative issuer", strings.Replace(head, "https://i.example", "/x", 1), "issuer.url"},
		{"ftp issuer", strings.Replace(head, "https://i.example", "ftp://i.example", 1), "issuer.url"},
		{"issuer query", strings.Replace(head, "https://i.example", `"https://i.example/?a=b"`, 1), "issuer.url"},
		{"issuer fragment", strings.Replace(head, "https://i.example", `"https://i.example/#f"`, 1), "issuer.url"},
		{"bad lifetime", strings.Replace(head, "https://i.example}", "https://i.example, tokenLifetime: soon}", 1), "issuer.tokenLifetime"},
		{"short lifetime", strings.Replace(head, "https://i.example}", "https://i.example, tokenLifetime: 59s}", 1), "issuer.tokenLifetime"},
		{"long lifetime", strings.Replace(head, "https://i.example}", "https://i.example, tokenLifetime: 61m}", 1), "issuer.tokenLifetime"},
		{"no namespace", head + "identities: [{serviceAccount: a}]\n", "identities[0].namespace is required"},
		{"no service account", head + "identities: [{namespace: a}]\n", "identities[0].serviceAccount is required"},
		{"bad glob", head + "identities: [{namespace: a, serviceAccount: a}, {namespace: a, serviceAccount: b, pod: \"[\"}]\n", `identities[1].pod: bad glob "["`},
		{"bad email", head + "identities: [{namespace: a, serviceAccount: a, email: nobody}]\n", "identities[0].email"},
		{"bad scope", head + "identities: [{namespace: a, serviceAccount: a, scopes: [\"a b\"]}]\n", "identities[0].scopes[0]"},
		{"bad namespace", head + "identities: [{namespace: A_B, serviceAccount: a}]\n", "identities[0].namespace"},
		{"control character in zone", "project: {id: p, numericId: \"1\"}\nnode: {name: n, zone: \"us\\x01\"}\n", "node.zone"},
		{"control character in scope", head + "identities: [{namespace: a, serviceAccount: a, scopes: [\"a\\u0085b\"]}]\n", "identities[0].scopes[0]"},
		{"zero rate", head + "limits: {requestsPerSecond: 0}\n", "limits.requestsPerSecond"},
		{"negative rate", head + "limits: {requestsPerSecond: -1}\n", "limits.requestsPerSecond"},
		{"huge rate", head + "limits: {requestsPerSecond: 10001}\n", "limits.requestsPerSecond"},
		{"zero burst", head + "limits: {burst: 0}\n", "limits.burst"},
		{"huge burst", head + "limits: {burst: 100001}\n", "limits.burst"},
		{"fractional burst", head + "limits: {burst: 1.5}\n", "burst"},
		{"unknown limit", head + "limits: {perPod: 3}\n", `unknown field "perPod"`},
		{"cluster without name", head + "cluster: {location: us-central1}\n", "cluster.name is required"},
		{"cluster without location", head + "cluster: {name: c}\n", "cluster.location is required"},
		{"empty cluster", head + "cluster: {}\n", "cluster.name is required"},
		{"cluster name with slash", head + "cluster: {name: a/b, location: l}\n", "cluster.name"},
		{"cluster location with space", head + "cluster: {name: c, location: \"us central1\"}\n", "cluster.location"},
		{"cluster uid with control character", head + "cluster: {name: c, location: l, uid: \"u\\x01\"}\n", "cluster.uid"},
		{"unknown cluster field", head + "cluster: {name: c, location: l, project: p}\n", `unknown field "project"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.text))
			if err == nil {
				t.Fatalf("no error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
	// A lifetime at either bound is fine.
	for _, d := range []string{"1m", "1h"} {
		if _, err := ParseConfig([]byte(strings.Replace(head, "https://i.example}", "https://i.example, tokenLifetime: "+d+"}", 1))); err != nil {
			t.Errorf("tokenLifetime %s: %v", d, err)
		}
	}
}

func TestLoadConfigNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "responder.yaml")
	if err := os.WriteFile(path, []byte("project: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("error %v does not name %s", err, path)
	}
	if _, err := LoadConfig(path + ".missing"); err == nil || !strings.Contains(err.Error(), path+".missing") {
		t.Errorf("error %v does not name the missing file", err)
	}
}

func TestParseConfigLimits(t *testing.T) {
	const head = "project: {id: p, numericId: \"1\"}\nnode: {name: n, zone: z}\nissuer: {url: https://i.example}\n"
	for _, tc := range []struct {
		name      string
		text      string
		perSecond float64
		burst     int
	}{
		{"defaults", head, DefaultRequestsPerSecond, DefaultBurst},
		{"empty section", head + "limits: {}\n", DefaultRequestsPerSecond, DefaultBurst},
		{"both", head + "limits: {requestsPerSecond: 5, burst: 20}\n", 5, 20},
		{"fraction", head + "limits: {requestsPerSecond: 0.5}\n", 0.5, DefaultBurst},
		{"burst only", head + "limits: {burst: 1}\n", DefaultRequestsPerSecond, 1},
		{"bounds", head + "limits: {requestsPerSecond: 10000, burst: 100000}\n", MaxRequestsPerSecond, MaxBurst},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tc.text))
			if err != nil {
				t.Fatal(err)
			}
			if *cfg.Limits.RequestsPerSecond != tc.perSecond || *cfg.Limits.Burst != tc.burst {
				t.Errorf("limits = %v/s burst %d, want %v/s burst %d", *cfg.Limits.RequestsPerSecond, *cfg.Limits.Burst, tc.perSecond, tc.burst)
			}
		})
	}
}

// TestLoadNodeConfig: one file for every node of a DaemonSet; each agent's
// --node-name fills node.name when the file has none, and never overrides
// one it has.
func TestLoadNodeConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, node string) string {
		p := filepath.Join(dir, name)
		body := "project: {id: p, numericId: \"1\"}\nnode: {" + node + "zone: z}\nissuer: {url: https://i.example}\nidentities: []\n"
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	shared := write("shared.yaml", "")
	cfg, err := LoadNodeConfig(shared, "pool-a-7")
	if err != nil || cfg.Node.Name != "pool-a-7" {
		t.Fatalf("shared file with --node-name pool-a-7: node.name %q, %v", cfg.Node.Name, err)
	}
	host, _ := os.Hostname()
	if cfg, err := LoadNodeConfig(shared, ""); err != nil || cfg.Node.Name != host {
		t.Fatalf("shared file without a node name: %q, %v; want the host name %q", cfg.Node.Name, err, host)
	}
	if cfg, err := LoadNodeConfig(write("own.yaml", "name: n1, "), "pool-a-7"); err != nil || cfg.Node.Name != "n1" {
		t.Fatalf("file naming its node: %q, %v; want n1 kept", cfg.Node.Name, err)
	}
}
