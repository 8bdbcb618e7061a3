package aws_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/metabind/metabind/responder/flavour/aws"
	"github.com/metabind/metabind/responder/flavour/gce"
	"github.com/metabind/metabind/responder/server"
	"github.com/metabind/metabind/responder/subject"
	"github.com/metabind/metabind/store"
)

// The pods of the tests: A and B with roles of their own, C without a
// role, D without a pod UID.
const (
	ipA, ipB, ipC, ipD = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"
	roleA              = "arn:aws:iam::111122223333:role/app/reader"
	roleB              = "arn:aws:iam::111122223333:role/writer"
	roleD              = "arn:aws:iam::111122223333:role/nouid"
)

var testNode = aws.Node{
	Region:           "eu-west-3",
	AvailabilityZone: "eu-west-3a",
	InstanceID:       "i-0123456789abcdef0",
	AccountID:        "444455556666",
	InstanceType:     "m6i.large",
}

// t0 is the tests' clock at start; credentials expire after it.
var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// bindings is the store as the tests set it: IP -> binding.
type bindings struct {
	mu sync.Mutex
	m  map[netip.Addr]store.Binding
	n  int // lookups
}

func (b *bindings) Lookup(ip netip.Addr) (store.Binding, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n++
	bd, ok := b.m[ip]
	return bd, ok, nil
}

func (b *bindings) bind(ip, pod, uid string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	a := netip.MustParseAddr(ip)
	b.m[a] = store.Binding{IP: a, Namespace: "ns", Pod: pod, PodUID: uid}
}

func (b *bindings) lookups() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// resolver makes a binding's subject, pod UID included.
type resolver struct{}

func (resolver) Resolve(_ context.Context, b store.Binding) (subject.Subject, error) {
	return subject.Subject{Binding: b, Namespace: b.Namespace, Pod: b.Pod, PodUID: b.PodUID, ServiceAccount: "sa"}, nil
}

// fakeSource gives each pod UID its role and each role its credentials,
// or err, counting the calls for credentials.
type fakeSource struct {
	mu    sync.Mutex
	roles map[string]string // pod UID -> role ARN
	creds map[string]aws.Credentials
	err   error
	calls int
}

func newFakeSource() *fakeSource {
	creds := func(id, account string) aws.Credentials {
		return aws.Credentials{
			AccessKeyID:     "ASIA" + id,
			SecretAccessKey: "secret-" + id,
			SessionToken:    "session-" + id,
			AccountID:       account,
			LastUpdated:     t0.Add(-5 * time.Minute),
			Expiration:      t0.Add(55 * time.Minute),
		}
	}
	return &fakeSource{
		roles: map[string]string{"uid-a": roleA, "uid-b": roleB, "": roleD},
		creds: map[string]aws.Credentials{roleA: creds("AAAA", "111122223333"), roleB: creds("BBBB", ""), roleD: creds("DDDD", "")},
	}
}

func (f *fakeSource) Role(s subject.Subject) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.roles[s.PodUID]
}

func (f *fakeSource) Credentials(_ context.Context, s subject.Subject) (aws.Credentials, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return aws.Credentials{}, f.err
	}
	return f.creds[f.roles[s.PodUID]], nil
}

func (f *fakeSource) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeSource) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// testKey is the session token key of the tests.
var testKey = bytes.Repeat([]byte{7}, aws.KeySize)

// env is a responder with both AWS flavours and the GCE flavour's default
// header, its store, source and clock.
type env struct {
	h    *server.Handler
	b    *bindings
	src  *fakeSource
	imds *aws.IMDS
	ctr  *aws.Container
	log  *bytes.Buffer

	mu  sync.Mutex
	now time.Time
}

func newEnv(t *testing.T, imdsV1 bool) *env {
	t.Helper()
	e := &env{b: &bindings{m: map[netip.Addr]store.Binding{}}, src: newFakeSource(), now: t0, log: &bytes.Buffer{}}
	e.b.bind(ipA, "a", "uid-a")
	e.b.bind(ipB, "b", "uid-b")
	e.b.bind(ipC, "c", "uid-c")
	e.b.bind(ipD, "d", "")
	e.imds = aws.NewIMDS(e.src, testNode, testKey, imdsV1)
	e.imds.Now = e.clock
	e.ctr = aws.NewContainer(e.src, testKey)
	e.ctr.Now = e.clock
	e.h = server.New(server.Options{
		Lookup:   e.b,
		Resolver: resolver{},
		Routes:   []server.Route{e.imds.Route(), e.ctr.Route()},
		Header:   gce.ResponseHeader(),
		Limits:   server.Limits{RequestsPerSecond: 1000, Burst: 1000},
		Log:      slog.New(slog.NewTextHandler(e.log, nil)),
	})
	return e
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
}

// do sends a request from ip with the headers given as name, value pairs.
func (e *env) do(method, target, ip string, hdr ...string) *httptest.ResponseRecorder {
	return do(e.h, method, target, ip, hdr...)
}

func do(h http.Handler, method, target, ip string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	r.RemoteAddr = ip + ":40000"
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// token mints a session token for the pod at ip.
func (e *env) token(t *testing.T, ip string, ttl int) string {
	t.Helper()
	w := e.do("PUT", "/latest/api/token", ip, aws.TokenTTLHeader, strconv.Itoa(ttl))
	if w.Code != 200 {
		t.Fatalf("PUT token from %s: %d %q", ip, w.Code, w.Body)
	}
	return w.Body.String()
}

// get GETs target from ip with tok ("" sends none).
func (e *env) get(target, ip, tok string) *httptest.ResponseRecorder {
	if tok == "" {
		return e.do("GET", target, ip)
	}
	return e.do("GET", target, ip, aws.TokenHeader, tok)
}

// routed is a responder with e's store and source serving f alone.
func routed(e *env, f *aws.IMDS) http.Handler {
	return server.New(server.Options{
		Lookup:   e.b,
		Resolver: resolver{},
		Routes:   []server.Route{f.Route()},
		Header:   gce.ResponseHeader(),
		Limits:   server.Limits{RequestsPerSecond: 1000, Burst: 1000},
	})
}
