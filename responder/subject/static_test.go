package subject

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/metabind/metabind/store"
)

func TestStatic(t *testing.T) {
	s := NewStatic([]Rule{
		{Namespace: "payments", Pod: "api-*", ServiceAccount: "api", Email: "api@p.example", Scopes: []string{"s1", "s2"}},
		{Namespace: "payments", ServiceAccount: "worker", Scopes: []string{DefaultScope}},
	}, "demo")
	for _, tc := range []struct {
		ns, pod string
		sa      string // "": no identity
		email   string
		claim   string
	}{
		{"payments", "api-1", "api", "api@p.example", "api@p.example"},
		{"payments", "api", "worker", "demo.svc.id.goog", ""}, // the glob wants a dash
		{"payments", "worker-1", "worker", "demo.svc.id.goog", ""},
		{"other", "api-1", "", "", ""},
		{"", "api-1", "", "", ""}, // not a Kubernetes pod
	} {
		b := store.Binding{Namespace: tc.ns, Pod: tc.pod, PodUID: "uid-" + tc.pod, ContainerID: "c"}
		got, err := s.Resolve(context.Background(), b)
		if tc.sa == "" {
			if !errors.Is(err, ErrNoIdentity) {
				t.Errorf("%s/%s: %+v, %v; want ErrNoIdentity", tc.ns, tc.pod, got, err)
			}
			continue
		}
		if err != nil || got.ServiceAccount != tc.sa || got.Email != tc.email || got.EmailClaim != tc.claim ||
			got.Binding.ContainerID != "c" || got.Namespace != tc.ns || got.Pod != tc.pod || got.PodUID != "uid-"+tc.pod {
			t.Errorf("%s/%s: %+v, %v", tc.ns, tc.pod, got, err)
		}
		if tc.sa == "api" && !slices.Equal(got.Scopes, []string{"s1", "s2"}) {
			t.Errorf("scopes %v", got.Scopes)
		}
	}
}

// A standalone rule's awsRoleArn reaches the credential sources as the
// annotation a Kubernetes service account would carry.
func TestStaticRuleAWSRole(t *testing.T) {
	const role = "arn:aws:iam::111122223333:role/reader"
	s := NewStatic([]Rule{{Namespace: "payments", ServiceAccount: "api", AWSRoleARN: role}, {Namespace: "web", ServiceAccount: "site"}}, "p")
	got, err := s.Resolve(context.Background(), store.Binding{Namespace: "payments", Pod: "api-1", PodUID: "u"})
	if err != nil || got.Annotations[RoleARNAnnotation] != role {
		t.Fatalf("rule with awsRoleArn: %+v, %v", got.Annotations, err)
	}
	got, err = s.Resolve(context.Background(), store.Binding{Namespace: "web", Pod: "site-1", PodUID: "u"})
	if err != nil || got.Annotations[RoleARNAnnotation] != "" {
		t.Fatalf("rule without: %+v, %v", got.Annotations, err)
	}
}
