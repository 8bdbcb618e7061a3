package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type saEntry struct {
	sa *corev1.ServiceAccount
	at time.Time // when the GET that read it was sent
}

// ServiceAccount returns the ServiceAccount namespace/name (the annotations
// that name a pod's cloud identity live there). The node may GET the
// ServiceAccounts its pods use, not list or watch them, so this is a GET
// cached for 30 s: a change is seen within 30 s. Callers asking for one
// account at once share one GET. Errors are not cached. While the API is
// out of reach, an account fetched before is served as last seen (its pods
// keep their identity, and cached tokens their key, through an outage); one
// never fetched is ErrUnavailable.
func (c *Client) ServiceAccount(ctx context.Context, namespace, name string) (*corev1.ServiceAccount, error) {
	key := namespace + "/" + name
	c.mu.Lock()
	e, ok := c.sas[key]
	c.mu.Unlock()
	if ok && time.Since(e.at) < c.saTTL {
		return e.sa, nil
	}
	ch := c.saFlights.DoChan(key, func() (any, error) {
		// Shared by every caller waiting: not cancelled with the first.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		defer cancel()
		return c.fetchServiceAccount(ctx, key, namespace, name)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*corev1.ServiceAccount), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: get serviceaccount %s: %w", ErrUnavailable, key, context.Cause(ctx))
	}
}

func (c *Client) fetchServiceAccount(ctx context.Context, key, namespace, name string) (*corev1.ServiceAccount, error) {
	sent := time.Now()
	c.saFetches.Add(1)
	sa, err := c.cs.CoreV1().ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{})
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		err = classify("get serviceaccount "+key, err, ErrServiceAccountNotFound)
		if errors.Is(err, ErrServiceAccountNotFound) {
			delete(c.sas, key)
		}
		if e, ok := c.sas[key]; ok && errors.Is(err, ErrUnavailable) {
			// The API is out of reach: the account as last seen serves
			// until it returns (a pod keeps its identity, and its cached
			// tokens their key), rather than nothing.
			return e.sa, nil
		}
		return nil, err
	}
	sa.ManagedFields = nil
	c.sas[key] = saEntry{sa: sa, at: sent}
	if sent.Sub(c.saPruned) > c.saTTL {
		for k, e := range c.sas {
			if sent.Sub(e.at) > 2*c.saTTL {
				delete(c.sas, k)
			}
		}
		c.saPruned = sent
	}
	return sa, nil
}
