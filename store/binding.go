// Package store is the node-local record of which pod owns which IP.
//
// The CNI plugin writes it on ADD and DEL; the responder and metabindctl
// read it. The file is a bbolt database under the state directory, guarded by
// a separate gate lock (see lock.go) so that readers never starve the plugin,
// and paired with a generation file (see generation.go) so that readers can
// tell with one load from a shared mapping whether anything changed since
// they last looked.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Binding is what the runtime told the plugin about one pod IP at ADD.
type Binding struct {
	IP netip.Addr `json:"ip"`
	// Network is the CNI network (the conflist's name) that bound the IP: a
	// runtime's GC lists the valid attachments of one network, so only
	// that network's bindings are its to collect. Empty in records written
	// before schema 2.
	Network       string `json:"network,omitempty"`
	ContainerID   string `json:"containerID"`
	IfName        string `json:"ifName"`
	NetNS         string `json:"netns,omitempty"`
	HostInterface string `json:"hostInterface"`
	Bridged       bool   `json:"bridged,omitempty"` // HostInterface is a bridge port
	// Responder is where the pod's redirect sends it, recorded so that the
	// rule can be found again after the netconf changes.
	Responder        netip.AddrPort `json:"responder"`
	Namespace        string         `json:"namespace,omitempty"`
	Pod              string         `json:"pod,omitempty"`
	PodUID           string         `json:"podUID,omitempty"`
	InfraContainerID string         `json:"infraContainerID,omitempty"`
	// Released marks a binding another attachment's ADD is taking the IP
	// over from (IPAM handed the IP on before this attachment's DEL). It
	// counts as unbound for the responder, while the taking ADD removes
	// its rules and then replaces the record; one left behind by an ADD
	// that failed in between still says whose rules to remove.
	Released    bool              `json:"released,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Created     time.Time         `json:"created"`
}

// Attachment names the CNI attachment (container ID + interface) that owns
// a binding; DEL and GC address bindings by it.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// Attachment returns the attachment that owns b.
func (b Binding) Attachment() Attachment {
	return Attachment{ContainerID: b.ContainerID, IfName: b.IfName}
}

func (a Attachment) key() []byte {
	// CNI container IDs are [A-Za-z0-9_.-]+ and interface names cannot hold
	// NUL, so NUL separates them unambiguously.
	return []byte(a.ContainerID + "\x00" + a.IfName)
}

func (a Attachment) String() string { return a.ContainerID + "/" + a.IfName }

func encodeBinding(b Binding) ([]byte, error) { return json.Marshal(b) }

// decodeBinding reads the record stored under key. Its errors say what is
// wrong with the record, not which one: callers report the key beside them
// (see UnreadableRecord).
func decodeBinding(key, value []byte) (Binding, error) {
	var b Binding
	if err := json.Unmarshal(value, &b); err != nil {
		return Binding{}, fmt.Errorf("bad JSON: %w", err)
	}
	if !b.IP.IsValid() {
		return Binding{}, errors.New("record names no IP")
	}
	if b.IP.String() != string(key) {
		return Binding{}, fmt.Errorf("record names IP %q", b.IP)
	}
	return b, nil
}

func encodeIPList(ips []netip.Addr) ([]byte, error) { return json.Marshal(ips) }

func decodeIPList(a Attachment, v []byte) ([]netip.Addr, error) {
	var ips []netip.Addr
	if err := json.Unmarshal(v, &ips); err != nil {
		return nil, fmt.Errorf("decode attachment %s: %w", a, err)
	}
	return ips, nil
}
