package plugin

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
)

// PodArgs is the pod identity a Kubernetes runtime passes in CNI_ARGS.
type PodArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive
	K8S_POD_UID                types.UnmarshallableString //nolint:revive
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive
}

// ParseArgs parses CNI_ARGS ("K=V;K=V", any order). Keys meant for other
// plugins are ignored whether or not the runtime sent IgnoreUnknown=1: a
// chained plugin must not fail a pod over arguments it does not use.
func ParseArgs(cniArgs string) (PodArgs, error) {
	var a PodArgs
	if cniArgs == "" {
		return a, nil
	}
	if err := types.LoadArgs("IgnoreUnknown=1;"+cniArgs, &a); err != nil {
		return PodArgs{}, fmt.Errorf("CNI_ARGS: %w", err)
	}
	return a, nil
}
