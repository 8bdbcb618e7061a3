package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/go-logr/logr"
)

const uidIndex = "uid"

// newPodInformer watches the pods scheduled on node: the only list and watch
// of pods the Node authorizer grants a node. Pods are indexed by UID, the
// key of a binding; managed fields are dropped (nothing here reads them).
func newPodInformer(cs kubernetes.Interface, node string) cache.SharedIndexInformer {
	onNode := fields.OneTermEqualSelector("spec.nodeName", node).String()
	inf := coreinformers.NewFilteredPodInformer(cs, metav1.NamespaceAll, 0,
		cache.Indexers{uidIndex: func(obj any) ([]string, error) {
			pod, ok := obj.(*corev1.Pod)
			if !ok {
				return nil, nil
			}
			return []string{string(pod.UID)}, nil
		}},
		func(o *metav1.ListOptions) { o.FieldSelector = onNode })
	_ = inf.SetTransform(func(obj any) (any, error) {
		if m, err := meta.Accessor(obj); err == nil {
			m.SetManagedFields(nil)
		}
		return obj, nil
	})
	return inf
}

// Start runs the node's pod informer for as long as ctx lives (ctx is its
// life, not a deadline for the first list) and returns once it has listed
// the node's pods, or with ctx's error when ctx ends first (the API
// unreachable at start: run Start in a goroutine not to wait). Pod works
// before (every request is then a GET) and while the API is away (from what
// the informer saw). Start runs once.
func (c *Client) Start(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return fmt.Errorf("kubernetes: pod informer already started")
	}
	// client-go logs through the context's logger: the client's.
	ctx = klog.NewContext(ctx, logr.FromSlogHandler(c.log.Handler()))
	go c.informer.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced) {
		return fmt.Errorf("kubernetes: listing the pods of node %s: %w", c.node, context.Cause(ctx))
	}
	c.log.Info("kubernetes: watching this node's pods", "node", c.node, "pods", len(c.informer.GetIndexer().ListKeys()))
	return nil
}

// HasSynced reports whether the pod informer has listed this node's pods
// (Start's first list is done): until then every pod is a GET.
func (c *Client) HasSynced() bool { return c.informer.HasSynced() }

// OnPodGone registers fn to be called with the UID of every pod of this node
// the informer sees deleted (or replaced by a pod of the same name), for
// cache eviction. fn runs on the informer's goroutine: keep it short.
func (c *Client) OnPodGone(fn func(uid string)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.goneFns = append(c.goneFns, fn)
}

// Pod returns the API object of the pod the runtime bound (namespace, name
// and UID from CNI_ARGS): from the informer by UID, else (a pod created a
// moment ago) by a GET of namespace/name whose UID must be uid. A pod of that
// name with another UID, or one seen deleted, is ErrPodNotFound; a pod the
// API does not relate to this node is *ErrForbidden (the Node authorizer
// answers 403 for a pod on another node, and for one that no longer exists
// when the informer did not see it go).
func (c *Client) Pod(ctx context.Context, namespace, name, uid string) (*corev1.Pod, error) {
	if uid == "" {
		return nil, fmt.Errorf("pod %s/%s: the binding has no pod UID: %w", namespace, name, ErrPodNotFound)
	}
	if pod := c.cachedPod(uid); pod != nil {
		return matchBinding(pod, namespace, name)
	}
	if c.wasDeleted(uid) {
		return nil, fmt.Errorf("pod %s/%s (UID %s) was deleted: %w", namespace, name, uid, ErrPodNotFound)
	}
	pod, err := c.getPod(ctx, namespace, name, uid)
	if fe := (*ErrForbidden)(nil); errors.As(err, &fe) {
		// The Node authorizer relates a pod to its node from a watch of its
		// own: for a moment after the pod is created it may not know it yet
		// (and neither may the informer). Give both that moment.
		c.podGraces.Add(1)
		if pod := c.waitPod(ctx, uid, forbiddenGrace); pod != nil {
			return matchBinding(pod, namespace, name)
		}
		if c.wasDeleted(uid) {
			return nil, fmt.Errorf("pod %s/%s (UID %s) was deleted: %w", namespace, name, uid, ErrPodNotFound)
		}
		if ctx.Err() == nil {
			pod, err = c.getPod(ctx, namespace, name, uid)
		}
	}
	return pod, err
}

func (c *Client) getPod(ctx context.Context, namespace, name, uid string) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	c.podGets.Add(1)
	op := fmt.Sprintf("get pod %s/%s", namespace, name)
	pod, err := c.cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, classify(op, err, ErrPodNotFound)
	}
	if string(pod.UID) != uid {
		return nil, fmt.Errorf("%s: UID %s, the binding's is %s (deleted and recreated): %w", op, pod.UID, uid, ErrPodNotFound)
	}
	if pod.Spec.NodeName != c.node {
		return nil, fmt.Errorf("%s: %w", op, &ErrForbidden{Reason: fmt.Sprintf("pod %s/%s is scheduled on node %q, not on %q", namespace, name, pod.Spec.NodeName, c.node)})
	}
	return pod, nil
}

// matchBinding checks that the informer's pod of the binding's UID has the
// binding's namespace and name.
func matchBinding(pod *corev1.Pod, namespace, name string) (*corev1.Pod, error) {
	if pod.Namespace != namespace || pod.Name != name {
		return nil, fmt.Errorf("pod UID %s is %s/%s, the binding says %s/%s: %w", pod.UID, pod.Namespace, pod.Name, namespace, name, ErrPodNotFound)
	}
	return pod, nil
}

func (c *Client) cachedPod(uid string) *corev1.Pod {
	objs, err := c.informer.GetIndexer().ByIndex(uidIndex, uid)
	if err != nil || len(objs) != 1 {
		return nil
	}
	pod, _ := objs[0].(*corev1.Pod)
	return pod
}

// waitPod waits at most d for the informer to have the pod of uid.
func (c *Client) waitPod(ctx context.Context, uid string, d time.Duration) *corev1.Pod {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		c.mu.Lock()
		changed := c.changed
		c.mu.Unlock()
		if pod := c.cachedPod(uid); pod != nil {
			return pod
		}
		select {
		case <-changed:
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

func (c *Client) notify() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Client) podUpdated(oldObj, newObj any) {
	old, ok1 := oldObj.(*corev1.Pod)
	pod, ok2 := newObj.(*corev1.Pod)
	if ok1 && ok2 && old.UID != pod.UID {
		// Deleted and recreated under the same name while the watch was
		// away: the relist shows it as an update.
		c.podGone(string(old.UID))
	}
	c.notify()
}

func (c *Client) podDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if pod, ok := obj.(*corev1.Pod); ok {
		c.podGone(string(pod.UID))
	}
}

func (c *Client) podGone(uid string) {
	now := time.Now()
	c.mu.Lock()
	c.gone[uid] = now
	if now.Sub(c.prunedAt) > time.Minute {
		for u, at := range c.gone {
			if now.Sub(at) > goneTTL {
				delete(c.gone, u)
			}
		}
		c.prunedAt = now
	}
	fns := c.goneFns
	c.mu.Unlock()
	for _, fn := range fns {
		fn(uid)
	}
}

func (c *Client) wasDeleted(uid string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.gone[uid]
	return ok && time.Since(at) <= goneTTL
}
