package aws

import (
	"strings"

	"github.com/metabind/metabind/responder/server"
)

// The flavours' names in metrics.
const (
	IMDSName      = "imds"
	ContainerName = "container"
)

// IMDSEndpoint names what path asks IMDS for, in metrics: a session token,
// the role's credentials, its name or instance profile, the instance
// identity document, other instance metadata, or other. The role's name is
// not part of it.
func IMDSEndpoint(path string) string {
	switch {
	case path == tokenPath:
		return server.EndpointSession
	case strings.HasPrefix(path, credsPath+"/") && len(path) > len(credsPath)+1:
		return server.EndpointCredentials
	case server.PathUnder(path, iamPath):
		return server.EndpointRole
	case server.PathUnder(path, identityPath):
		return server.EndpointIdentity
	case server.PathUnder(path, metaDataPath):
		return server.EndpointInstance
	}
	return server.EndpointOther
}

// ContainerEndpoint names what path asks the container-credentials API
// for: its one path is the role's credentials.
func ContainerEndpoint(path string) string {
	if path == ContainerPrefix {
		return server.EndpointCredentials
	}
	return server.EndpointOther
}
