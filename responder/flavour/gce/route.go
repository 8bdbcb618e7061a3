package gce

import (
	"strings"

	"github.com/metabind/metabind/responder/server"
)

// Name is the flavour's name in metrics.
const Name = "gce"

// Route is the flavour's route: its prefix, and its name and endpoints for
// metrics.
func (f *Flavour) Route() server.Route {
	return server.Route{Prefix: Prefix, Flavour: f, Name: Name, Endpoint: Endpoint}
}

// Endpoint names what path asks for, in metrics: a service account's
// token, identity or email, the project's or the instance's metadata, or
// other. The account's name is not part of it.
func Endpoint(path string) string {
	if rest, ok := strings.CutPrefix(path, serviceAccountsPath+"/"); ok {
		_, leaf, _ := strings.Cut(rest, "/")
		switch leaf {
		case "token":
			return server.EndpointToken
		case "identity":
			return server.EndpointIdentity
		case "email":
			return server.EndpointEmail
		}
		return server.EndpointInstance
	}
	switch {
	case server.PathUnder(path, v1Path+"/project"):
		return server.EndpointProject
	case server.PathUnder(path, v1Path+"/instance"):
		return server.EndpointInstance
	}
	return server.EndpointOther
}
