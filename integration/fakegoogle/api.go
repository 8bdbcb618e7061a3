package fakegoogle

import (
	"net/http"
	"strings"
)

// storageScopes are the scopes that let a token read a bucket's metadata.
var storageScopes = []string{
	"https://www.googleapis.com/auth/cloud-platform",
	"https://www.googleapis.com/auth/cloud-platform.read-only",
	"https://www.googleapis.com/auth/devstorage.full_control",
	"https://www.googleapis.com/auth/devstorage.read_write",
	"https://www.googleapis.com/auth/devstorage.read_only",
}

// api is Cloud Storage's bucket GET: what a pod calls with the token it got.
// It takes a live token the fake issued: an access token of a service
// account, or a federated token (direct resource access). Every bucket
// exists; there is no per-bucket permission.
func (f *Fake) api(w http.ResponseWriter, r *http.Request) {
	f.count(func(c *Calls) *int { return &c.API }, false)
	bucket := strings.TrimPrefix(r.URL.Path, "/storage/v1/b/")
	if r.Method != http.MethodGet || bucket == "" || strings.Contains(bucket, "/") {
		f.denied()
		apiError(w, http.StatusNotFound, "NOT_FOUND", "Not Found")
		return
	}
	token := bearer(r)
	if token == "" {
		f.denied()
		f.logf("api: no bearer token")
		apiError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "Anonymous caller does not have storage.buckets.get access to the Google Cloud Storage bucket.")
		return
	}
	info, ok := f.live(token)
	if !ok {
		f.denied()
		f.logf("api: a token it did not issue, or expired")
		apiError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "Invalid Credentials")
		return
	}
	if !scopesCover(info.Scopes, storageScopes...) {
		f.denied()
		f.logf("api: a token without a storage scope (%s %s)", info.Principal, info.ServiceAccount)
		apiError(w, http.StatusForbidden, "PERMISSION_DENIED", "Request had insufficient authentication scopes.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{
		"kind":         "storage#bucket",
		"id":           bucket,
		"name":         bucket,
		"location":     "US",
		"storageClass": "STANDARD",
	})
}
