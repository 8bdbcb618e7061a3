package gce

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// InstanceID is what instance/id answers: the FNV-1a 64-bit hash of the
// node name, as an unsigned decimal. It is stable across restarts and
// differs between nodes.
func InstanceID(node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(node))
	return h.Sum64()
}

// body is one precomputed response body, with its header values.
type body struct {
	data  []byte
	ctype string
	etag  string

	ctypeHeader []string // {ctype}
	etagHeader  []string // {etag}
}

func newBody(data []byte, ctype string) body {
	h := fnv.New64a()
	h.Write(data)
	etag := strconv.FormatUint(h.Sum64(), 16)
	return body{data: data, ctype: ctype, etag: etag, ctypeHeader: []string{ctype}, etagHeader: []string{etag}}
}

// entry is one metadata path. A scalar answers text, or json with alt=json.
// A directory answers its listing as text, or as a JSON array with
// alt=json, and its tree as JSON with recursive=true.
type entry struct {
	dir  bool
	text body
	json body // scalar: alt=json; directory: recursive=true
	list body // directory: alt=json
}

func scalar(text string, jsonValue any) *entry {
	return &entry{text: newBody([]byte(text), textType), json: newBody(mustJSON(jsonValue), jsonType)}
}

func directory(names []string, tree any) *entry {
	if names == nil {
		names = []string{} // alt=json lists an empty directory as [], not null
	}
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n)
		b.WriteByte('\n')
	}
	return &entry{
		dir:  true,
		text: newBody([]byte(b.String()), textType),
		json: newBody(mustJSON(tree), jsonType),
		list: newBody(mustJSON(names), jsonType),
	}
}

// mustJSON encodes the plain structs below, which cannot fail.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err))
	}
	return b
}

// The recursive=true trees, with GCE's camelCase keys.
type (
	rootTree struct {
		Instance instanceTree `json:"instance"`
		Project  projectTree  `json:"project"`
		Universe universeTree `json:"universe"`
	}
	instanceTree struct {
		// Attributes keep their names as they are, as GCE's custom
		// metadata keys do.
		Attributes      map[string]string      `json:"attributes"`
		Hostname        string                 `json:"hostname"`
		ID              uint64                 `json:"id"`
		Name            string                 `json:"name"`
		ServiceAccounts map[string]accountTree `json:"serviceAccounts"`
		Zone            string                 `json:"zone"`
	}
	accountTree struct {
		Aliases []string `json:"aliases"`
		Email   string   `json:"email"`
		Scopes  []string `json:"scopes"`
	}
	projectTree struct {
		NumericProjectID json.Number `json:"numericProjectId"`
		ProjectID        string      `json:"projectId"`
	}
	universeTree struct {
		UniverseDomain string `json:"universeDomain"`
	}
)

// UniverseDomain is what universe/universe-domain answers: the Google
// Cloud universe whose APIs the tokens are for.
const UniverseDomain = "googleapis.com"

// attributes are the instance attributes of cfg, as a GKE node has them
// (cluster-name, cluster-location, cluster-uid), each only when set; none
// without a cluster, as on a VM without custom metadata.
func attributes(cfg *Config) map[string]string {
	a := map[string]string{}
	for name, value := range map[string]string{
		"cluster-location": cfg.Cluster.Location,
		"cluster-name":     cfg.Cluster.Name,
		"cluster-uid":      cfg.Cluster.UID,
	} {
		if value != "" {
			a[name] = value
		}
	}
	return a
}

// view is the metadata the callers of one identity (an account email and
// its scopes) see, keyed by path without trailing slash.
type view struct {
	entries map[string]*entry
	email   string
	scopes  []string // as the identity holds them
	granted []string // scopes sorted, each once: what a token grants without ?scopes=
}

func newView(cfg *Config, email string, scopes []string) *view {
	v := &view{entries: make(map[string]*entry), email: email, scopes: slices.Clone(scopes), granted: scopeSet(scopes)}
	e := v.entries

	project := projectTree{NumericProjectID: json.Number(cfg.NumericProjectID), ProjectID: cfg.ProjectID}
	e[v1Path+"/project"] = directory([]string{"numeric-project-id", "project-id"}, project)
	e[v1Path+"/project/numeric-project-id"] = scalar(cfg.NumericProjectID, project.NumericProjectID)
	e[v1Path+"/project/project-id"] = scalar(cfg.ProjectID, cfg.ProjectID)

	instance := instanceTree{
		Attributes:      attributes(cfg),
		Hostname:        cfg.Instance + "." + cfg.Zone + ".c." + cfg.ProjectID + ".internal",
		ID:              InstanceID(cfg.Instance),
		Name:            cfg.Instance,
		ServiceAccounts: map[string]accountTree{},
		Zone:            "projects/" + cfg.NumericProjectID + "/zones/" + cfg.Zone,
	}
	e[v1Path+"/instance/hostname"] = scalar(instance.Hostname, instance.Hostname)
	e[v1Path+"/instance/id"] = scalar(strconv.FormatUint(instance.ID, 10), instance.ID)
	e[v1Path+"/instance/name"] = scalar(instance.Name, instance.Name)
	e[v1Path+"/instance/zone"] = scalar(instance.Zone, instance.Zone)
	instanceNames := []string{"attributes/", "hostname", "id", "name", "service-accounts/", "zone"}
	attributeNames := slices.Sorted(maps.Keys(instance.Attributes))
	for _, name := range attributeNames {
		e[v1Path+"/instance/attributes/"+name] = scalar(instance.Attributes[name], instance.Attributes[name])
	}
	e[v1Path+"/instance/attributes"] = directory(attributeNames, instance.Attributes)

	acct := accountTree{Aliases: []string{defaultAccount}, Email: email, Scopes: v.scopes}
	instance.ServiceAccounts[defaultAccount] = acct
	instance.ServiceAccounts[email] = acct

	e[serviceAccountsPath] = directory([]string{defaultAccount + "/", email + "/"}, instance.ServiceAccounts)
	acctDir := directory([]string{"aliases", "email", "identity", "scopes", "token"}, acct)
	emailEntry := scalar(email, email)
	aliases := scalar(strings.Join(acct.Aliases, "\n"), acct.Aliases)
	scopesEntry := scalar(strings.Join(acct.Scopes, "\n"), acct.Scopes)
	for _, name := range []string{defaultAccount, email} {
		p := serviceAccountsPath + "/" + name
		e[p] = acctDir
		e[p+"/email"] = emailEntry
		e[p+"/aliases"] = aliases
		e[p+"/scopes"] = scopesEntry
	}
	e[v1Path+"/instance"] = directory(instanceNames, instance)

	universe := universeTree{UniverseDomain: UniverseDomain}
	e[v1Path+"/universe"] = directory([]string{"universe-domain"}, universe)
	e[v1Path+"/universe/universe-domain"] = scalar(universe.UniverseDomain, universe.UniverseDomain)

	root := rootTree{Instance: instance, Project: project, Universe: universe}
	e[v1Path] = directory([]string{"instance/", "project/", "universe/"}, root)
	e[computeMetadataPath] = directory([]string{"v1/"}, map[string]rootTree{"v1": root})
	return v
}

// maxViews bounds the views kept: one per identity that has called, which
// on a node is a handful. Past it they are all dropped and made again.
const maxViews = 1024

// views holds the view of each identity, made on its first request.
type views struct {
	mu      sync.RWMutex
	byEmail map[string][]*view
	n       int
}

// get returns the view of email and scopes, made from cfg on first use.
func (vs *views) get(cfg *Config, email string, scopes []string) *view {
	vs.mu.RLock()
	v := vs.findLocked(email, scopes)
	vs.mu.RUnlock()
	if v != nil {
		return v
	}
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if v := vs.findLocked(email, scopes); v != nil {
		return v
	}
	if vs.byEmail == nil || vs.n >= maxViews {
		vs.byEmail, vs.n = make(map[string][]*view), 0
	}
	v = newView(cfg, email, scopes)
	vs.byEmail[email] = append(vs.byEmail[email], v)
	vs.n++
	return v
}

func (vs *views) findLocked(email string, scopes []string) *view {
	for _, v := range vs.byEmail[email] {
		if slices.Equal(v.scopes, scopes) {
			return v
		}
	}
	return nil
}
