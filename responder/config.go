// Package responder is metabind-responder assembled: its configuration
// file (config.go) and the handler made from it (responder.go), which
// serves the GCE metadata API v1 to the pods of one node.
//
// The CNI plugin records which pod owns which IP in the binding store and
// DNATs the pod's traffic for 169.254.169.254:80 to the responder. The
// responder identifies a caller only by the TCP peer address of its
// connection, looks the address up in the store (server), matches the
// binding against the identity rules of its configuration (subject),
// answers as GCE's metadata server does (flavour/gce), with tokens it signs
// itself (credentials, issuer), so relying parties verify them against the
// issuer's OIDC discovery document and JWKS.
package responder

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"sigs.k8s.io/yaml"

	"github.com/metabind/metabind/aws"
	"github.com/metabind/metabind/gcp"
	"github.com/metabind/metabind/kube"
	"github.com/metabind/metabind/responder/issuer"
	"github.com/metabind/metabind/responder/subject"
)

// Config is the responder's configuration file (YAML or JSON).
type Config struct {
	Project    ProjectConfig  `json:"project"`
	Node       NodeConfig     `json:"node"`
	Cluster    *ClusterConfig `json:"cluster,omitempty"`
	Issuer     issuer.Config  `json:"issuer"`
	Limits     LimitsConfig   `json:"limits,omitempty"`
	Log        LogConfig      `json:"log,omitempty"`
	Identities []subject.Rule `json:"identities"`
	// Kubernetes, when present, makes the pod's identity its Kubernetes
	// service account and its ID tokens the cluster's (see
	// KubernetesConfig). Identities then only narrow who is served.
	Kubernetes *KubernetesConfig `json:"kubernetes,omitempty"`
	// GCP, when present, gives pods Google credentials through workload
	// identity federation (STS, then IAM Credentials): see gcp.Config and
	// docs/GCP.md.
	GCP *gcp.Config `json:"gcp,omitempty"`
	// AWS, when present, serves IMDSv2 (/latest) and the container
	// credentials API (/v1/credentials) with the role credentials STS
	// AssumeRoleWithWebIdentity gives for the pod's web identity.
	AWS *AWSConfig `json:"aws,omitempty"`
}

// AWSConfig is the aws: section.
type AWSConfig struct {
	Region          string `json:"region"`
	STSURL          string `json:"stsURL,omitempty"`
	CAFile          string `json:"caFile,omitempty"`
	SessionDuration string `json:"sessionDuration,omitempty"` // 15m..12h, default 1h
	// IMDSv1 also answers GETs without a session token.
	IMDSv1 bool `json:"imdsV1,omitempty"`

	Client aws.Config `json:"-"` // the STS client's, completed
}

func (a *AWSConfig) complete() error {
	a.Client = aws.Config{Region: a.Region, STSURL: a.STSURL, CAFile: a.CAFile}
	if a.SessionDuration != "" {
		d, err := time.ParseDuration(a.SessionDuration)
		if err != nil {
			return fmt.Errorf("aws.sessionDuration: %w", err)
		}
		a.Client.SessionDuration = d
	}
	if err := a.Client.Complete(); err != nil {
		return fmt.Errorf("aws.%w", err)
	}
	return nil
}

// KubernetesConfig is the kubernetes: section.
type KubernetesConfig struct {
	// Kubeconfig is the node's credential (recommended: the kubelet's own,
	// group system:nodes, which can only mint tokens for pods on this
	// node); empty: the in-cluster config of the responder's pod.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// Audiences are those pods may ask ID tokens for; each must also be
	// granted to system:nodes in RBAC (deploy/rbac.yaml).
	Audiences []string `json:"audiences,omitempty"`
	// TokenLifetime is the TokenRequest's expirationSeconds, 10m..24h.
	TokenLifetime string        `json:"tokenLifetime,omitempty"`
	Lifetime      time.Duration `json:"-"` // parsed TokenLifetime
}

// apiServerAudiences are audiences no pod may ask for: a token for one of
// them is a credential for the Kubernetes API itself.
var apiServerAudiences = []string{"https://kubernetes.default.svc", "https://kubernetes.default.svc.cluster.local", "kubernetes", "api", "k3s", "https://kubernetes.default"}

func (k *KubernetesConfig) complete() error {
	k.Lifetime = kube.DefaultTokenLifetime
	if k.TokenLifetime != "" {
		d, err := time.ParseDuration(k.TokenLifetime)
		if err != nil {
			return fmt.Errorf("kubernetes.tokenLifetime: %w", err)
		}
		k.Lifetime = d
	}
	if k.Lifetime < kube.MinTokenLifetime || k.Lifetime > kube.MaxTokenLifetime {
		return fmt.Errorf("kubernetes.tokenLifetime: %v is outside %v..%v", k.Lifetime, kube.MinTokenLifetime, kube.MaxTokenLifetime)
	}
	seen := map[string]bool{}
	for i, a := range k.Audiences {
		switch {
		case a == "" || !printable(a) || strings.ContainsAny(a, " \t,"):
			return fmt.Errorf("kubernetes.audiences[%d]: %q is not an audience", i, a)
		case seen[a]:
			return fmt.Errorf("kubernetes.audiences[%d]: %q is listed twice", i, a)
		case slices.Contains(apiServerAudiences, a):
			return fmt.Errorf("kubernetes.audiences[%d]: %q is the Kubernetes API server's audience: a token for it would be a credential for the API", i, a)
		}
		seen[a] = true
	}
	return nil
}

// ProjectConfig is what project/* answers.
type ProjectConfig struct {
	ID string `json:"id"`
	// NumericID is digits only. YAML may write it quoted or as a number.
	NumericID Digits `json:"numericId"`
}

// NodeConfig is what instance/* answers.
type NodeConfig struct {
	// Name defaults to the host name.
	Name string `json:"name,omitempty"`
	Zone string `json:"zone"`
}

// ClusterConfig is the optional cluster: section: the Kubernetes cluster
// the node belongs to, as GKE's metadata server tells pods
// (instance/attributes/cluster-name, cluster-location, cluster-uid). Name
// and location are required; an omitted uid is not served.
//
//	cluster:
//	  name: prod-1
//	  location: us-central1      # the cluster's region or zone
//	  uid: 0123456789abcdef...   # optional
type ClusterConfig struct {
	Name     string `json:"name"`
	Location string `json:"location"`
	UID      string `json:"uid,omitempty"`
}

func (c *ClusterConfig) complete() error {
	for _, f := range []struct {
		key, value string
		required   bool
	}{{"name", c.Name, true}, {"location", c.Location, true}, {"uid", c.UID, false}} {
		switch {
		case f.value == "" && f.required:
			return fmt.Errorf("cluster.%s is required", f.key)
		case f.value != "" && !plainName(f.value):
			return fmt.Errorf("cluster.%s: %q has characters a metadata value cannot hold", f.key, f.value)
		}
	}
	return nil
}

// Per-caller rate limit defaults and bounds. The defaults let an SDK
// refresh tokens and read metadata freely (a cold start reads a few dozen
// paths) while one pod cannot keep the responder busy for the others.
const (
	DefaultRequestsPerSecond = 50
	DefaultBurst             = 100
	MaxRequestsPerSecond     = 10000
	MaxBurst                 = 100000
)

// LimitsConfig is the optional limits section: a token bucket per caller
// IP, applied to /computeMetadata requests once the caller is known
// (the OIDC documents and / are not limited). A caller over its limit gets
// 429 with Retry-After.
//
//	limits:
//	  requestsPerSecond: 50   # sustained requests per second per caller IP; > 0 and <= 10000; default 50
//	  burst: 100              # requests a caller may send at once; 1..100000; default 100
//
// An omitted key takes its default, so "limits: {burst: 200}" keeps 50/s.
type LimitsConfig struct {
	RequestsPerSecond *float64 `json:"requestsPerSecond,omitempty"`
	Burst             *int     `json:"burst,omitempty"`
}

// Digits is a decimal number kept as its digits; it unmarshals from a JSON
// string or number.
type Digits string

// UnmarshalJSON accepts "123" and 123.
func (d *Digits) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*d = Digits(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("want a string of digits: %w", err)
	}
	*d = Digits(n)
	return nil
}

// LoadConfig reads and validates the configuration file at path.
func LoadConfig(path string) (*Config, error) { return LoadNodeConfig(path, "") }

// LoadNodeConfig is LoadConfig where node.name, when the file leaves it
// out, is nodeName (unless empty) rather than the host name: one
// configuration file serves every node of a DaemonSet, each agent told its
// node's name (--node-name, the pod's spec.nodeName), which is not always
// its host name.
func LoadNodeConfig(path, nodeName string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := parseConfig(data, nodeName)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes YAML or JSON strictly (unknown fields are errors),
// fills in defaults and validates.
func ParseConfig(data []byte) (*Config, error) { return parseConfig(data, "") }

// ParseNodeConfig is ParseConfig with LoadNodeConfig's nodeName.
func ParseNodeConfig(data []byte, nodeName string) (*Config, error) {
	return parseConfig(data, nodeName)
}

func parseConfig(data []byte, nodeName string) (*Config, error) {
	var cfg Config
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return nil, err
	}
	if cfg.Node.Name == "" {
		cfg.Node.Name = nodeName
	}
	if err := cfg.complete(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

var (
	// dnsLabel is a Kubernetes namespace name (RFC 1123 label).
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	// dnsSubdomain is a Kubernetes service account name.
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
)

// plainName rejects what cannot sit in a metadata path or host name, and
// what cannot be served or logged as is: invalid UTF-8 and control
// characters.
func plainName(s string) bool {
	return s != "" && printable(s) && !strings.ContainsAny(s, "/\\ ?#%")
}

// printable: valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func (c *Config) complete() error {
	if c.Project.ID == "" {
		return errors.New("project.id is required")
	}
	if !plainName(c.Project.ID) {
		return fmt.Errorf("project.id: %q has characters a project ID cannot hold", c.Project.ID)
	}
	if c.Project.NumericID == "" {
		return errors.New("project.numericId is required")
	}
	if _, err := strconv.ParseUint(string(c.Project.NumericID), 10, 64); err != nil || strings.Trim(string(c.Project.NumericID), "0123456789") != "" {
		return fmt.Errorf("project.numericId: %q is not a decimal number", c.Project.NumericID)
	}
	if len(c.Project.NumericID) > 1 && c.Project.NumericID[0] == '0' {
		// Project numbers have none, and JSON numbers may not have any.
		return fmt.Errorf("project.numericId: %q has a leading zero", c.Project.NumericID)
	}

	if c.Node.Name == "" {
		name, err := os.Hostname()
		if err != nil || name == "" {
			return fmt.Errorf("node.name is not set and the host name is unknown: %v", err)
		}
		c.Node.Name = name
	}
	if !plainName(c.Node.Name) {
		return fmt.Errorf("node.name: %q has characters a host name cannot hold", c.Node.Name)
	}
	if c.Node.Zone == "" {
		return errors.New("node.zone is required")
	}
	if !plainName(c.Node.Zone) {
		return fmt.Errorf("node.zone: %q has characters a zone cannot hold", c.Node.Zone)
	}
	if c.Cluster != nil {
		if err := c.Cluster.complete(); err != nil {
			return err
		}
	}

	if err := c.Issuer.Complete(); err != nil {
		return fmt.Errorf("issuer.%w", err)
	}
	if err := c.Limits.complete(); err != nil {
		return err
	}
	if err := c.Log.complete(); err != nil {
		return err
	}

	for i := range c.Identities {
		if err := completeRule(&c.Identities[i]); err != nil {
			return fmt.Errorf("identities[%d].%w", i, err)
		}
	}
	if c.Kubernetes != nil {
		if err := c.Kubernetes.complete(); err != nil {
			return err
		}
	}
	if c.GCP != nil {
		if err := c.GCP.Complete(); err != nil {
			return fmt.Errorf("gcp.%w", err)
		}
	}
	if c.AWS != nil {
		if err := c.AWS.complete(); err != nil {
			return err
		}
	}
	for i, r := range c.Identities {
		if r.AWSRoleARN != "" {
			if err := aws.ValidRoleARN(r.AWSRoleARN); err != nil {
				return fmt.Errorf("identities[%d].awsRoleArn: %w", i, err)
			}
		}
	}
	return nil
}

func (l *LimitsConfig) complete() error {
	if l.RequestsPerSecond == nil {
		r := float64(DefaultRequestsPerSecond)
		l.RequestsPerSecond = &r
	}
	if r := *l.RequestsPerSecond; !(r > 0 && r <= MaxRequestsPerSecond) { // also refuses NaN
		return fmt.Errorf("limits.requestsPerSecond: %v is outside (0, %d]", r, MaxRequestsPerSecond)
	}
	if l.Burst == nil {
		b := DefaultBurst
		l.Burst = &b
	}
	if b := *l.Burst; b < 1 || b > MaxBurst {
		return fmt.Errorf("limits.burst: %d is outside 1..%d", b, MaxBurst)
	}
	return nil
}

// completeRule checks an identity rule and fills in its default scopes.
// Its errors start with the field name: the caller prefixes
// "identities[i].".
func completeRule(r *subject.Rule) error {
	if r.Namespace == "" {
		return errors.New("namespace is required")
	}
	if len(r.Namespace) > 63 || !dnsLabel.MatchString(r.Namespace) {
		return fmt.Errorf("namespace: %q is not a Kubernetes namespace name", r.Namespace)
	}
	if r.Pod != "" {
		if _, err := path.Match(r.Pod, ""); err != nil {
			return fmt.Errorf("pod: bad glob %q: %w", r.Pod, err)
		}
	}
	if r.ServiceAccount == "" {
		return errors.New("serviceAccount is required")
	}
	if len(r.ServiceAccount) > 253 || !dnsSubdomain.MatchString(r.ServiceAccount) {
		return fmt.Errorf("serviceAccount: %q is not a Kubernetes service account name", r.ServiceAccount)
	}
	if r.Email != "" && (!strings.Contains(r.Email, "@") || !plainName(r.Email)) {
		return fmt.Errorf("email: %q is not an email address", r.Email)
	}
	if len(r.Scopes) == 0 {
		r.Scopes = []string{subject.DefaultScope}
	}
	for j, s := range r.Scopes {
		if s == "" || !printable(s) || strings.ContainsAny(s, " ,") {
			return fmt.Errorf("scopes[%d]: %q is not a scope", j, s)
		}
	}
	return nil
}
