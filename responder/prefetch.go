package responder

import (
	"context"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/metabind/metabind/responder/credentials"
	"github.com/metabind/metabind/store"
)

// WatchInterval is how often Watch looks for new and gone bindings: one
// load of the store's mapped generation counter when nothing changed.
const WatchInterval = 100 * time.Millisecond

// Watch keeps the token cache in step with the bindings until ctx is done:
// when a binding appears it mints the pod's ID tokens for every configured
// audience (Kubernetes mode), so the pod's first request after its ADD is
// answered from the cache; when a binding goes, its pod's tokens go with it
// (a pod-bound token is only ever served to its pod). Standalone, only the
// latter.
func (r *Responder) Watch(ctx context.Context, view *store.View, log *slog.Logger) {
	watch(ctx, view, log, func() *Responder { return r })
}

// watch is Watch for the responder current returns at each change (Live's
// of the moment).
func watch(ctx context.Context, view *store.View, log *slog.Logger, current func() *Responder) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var seen map[netip.Addr]store.Binding
	t := time.NewTicker(WatchInterval)
	defer t.Stop()
	for {
		if now, err := view.Bindings(); err == nil && !sameMap(now, seen) {
			if seen != nil { // the bindings at start are prefetched on demand
				current().changed(ctx, seen, now, log)
			}
			seen = now
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// changed prefetches for the bindings in now that were not in before, and
// forgets the tokens of the pods whose bindings went.
func (r *Responder) changed(ctx context.Context, before, now map[netip.Addr]store.Binding, log *slog.Logger) {
	for ip, b := range before {
		if n, ok := now[ip]; !ok || n.PodUID != b.PodUID {
			r.ForgetPod(b.PodUID)
		}
	}
	if len(r.audiences) == 0 && !r.prefetchAccess && r.awsCreds == nil {
		return
	}
	for ip, b := range now {
		if old, ok := before[ip]; ok && old.PodUID == b.PodUID {
			continue
		}
		go r.prefetch(ctx, b, log)
	}
}

// prefetch mints b's ID tokens through the cache, as the pod's first
// request would; a request that comes meanwhile joins the mint.
func (r *Responder) prefetch(ctx context.Context, b store.Binding, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := r.subjects.Resolve(ctx, b)
	if err != nil {
		log.Debug("no prefetch", "ip", b.IP.String(), "pod", b.Namespace+"/"+b.Pod, "error", err.Error())
		return
	}
	s.Binding = b
	if r.awsCreds != nil && credentials.Role(s) != "" {
		r.metrics.Prefetch()
		if _, _, err := credentials.AWSCredentials(ctx, r.awsCreds, s); err != nil {
			log.Debug("prefetch failed", "ip", b.IP.String(), "pod", b.Namespace+"/"+b.Pod, "role", credentials.Role(s), "error", err.Error())
		}
	}
	if r.prefetchAccess {
		r.metrics.Prefetch()
		scopes := slices.Compact(slices.Sorted(slices.Values(s.Scopes))) // as the flavour keys a request without ?scopes=
		if _, err := r.tokens.AccessToken(ctx, s, scopes); err != nil {
			log.Debug("prefetch failed", "ip", b.IP.String(), "pod", b.Namespace+"/"+b.Pod, "error", err.Error())
		}
	}
	for _, aud := range r.audiences {
		r.metrics.Prefetch()
		if _, err := r.tokens.IDToken(ctx, s, aud, credentials.FormatStandard, false); err != nil {
			log.Debug("prefetch failed", "ip", b.IP.String(), "pod", b.Namespace+"/"+b.Pod, "audience", aud, "error", err.Error())
		}
	}
}

// ForgetPod drops the cached tokens of the pod with uid (its binding or its
// API object is gone).
func (r *Responder) ForgetPod(uid string) {
	r.tokens.ForgetPod(uid)
	if r.awsCreds != nil {
		r.awsCreds.ForgetPod(uid)
	}
}

// sameMap reports whether a and b are the same map: the view makes a new
// one for every change.
func sameMap(a, b map[netip.Addr]store.Binding) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}
