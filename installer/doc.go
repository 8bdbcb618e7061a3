// Package installer keeps metabind chained behind the node's primary CNI
// plugin: it copies the plugin binary into the CNI bin dir and appends
// metabind's entry to the conflist the container runtime uses, undoes both,
// and (Watch) puts them back when the primary CNI rewrites its config.
//
// Order matters to a runtime that may read the config at any moment: Install
// copies the binary before it names it in a conflist, Uninstall removes the
// entry before the binary. Every file is replaced by rename, so a reader sees
// either the old bytes or the complete new ones.
package installer
