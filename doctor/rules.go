package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// shown is how many offenders a detail names before "and N more".
const shown = 3

// checkStore: the binding store reads, at a schema this binary knows, and
// every record decodes.
func checkStore(_ context.Context, n *node) Result {
	s := n.readStore()
	switch {
	case s.missing:
		return warned("if the netconf's stateDir is not "+n.StateDir+", give it with --state-dir",
			"no binding store at %s: no pod ADD has run through metabind on this node yet", store.DBPath(n.StateDir))
	case errors.Is(s.err, store.ErrNewerSchema):
		return failed("upgrade metabindctl to the release of the metabind DaemonSet", "%v", s.err)
	case errors.Is(s.err, store.ErrBusy):
		return failed("find what holds "+store.DBPath(n.StateDir)+" (fuser -v); metabind's own processes hold it for milliseconds", "%v", s.err)
	case s.err != nil:
		return failed("see docs/OPERATIONS.md (binding store)", "%v", s.err)
	}
	detail := fmt.Sprintf("%s: schema %d (compatVersion %d; this binary: %d), %s, %s, %s",
		store.DBPath(n.StateDir), s.version, s.compat, store.SchemaVersion, plural(len(s.bindings), "binding", "bindings"),
		plural(len(s.bases), "base", "bases"), plural(len(s.unreadable), "unreadable record", "unreadable records"))
	if len(s.unreadable) > 0 {
		var keys []string
		for _, r := range s.unreadable {
			keys = append(keys, r.String())
		}
		return failed("see docs/OPERATIONS.md (unreadable records); the pod's next ADD of the IP rewrites its record",
			"%s: their IPs are unanswered: %s", detail, firstFew(keys))
	}
	return ok("%s", detail)
}

// checkBaseRules: for every recorded base, the chains, jumps and block
// rules are whole (redirect's audit).
func checkBaseRules(_ context.Context, n *node) Result {
	s := n.readStore()
	if s.missing || s.err != nil || len(s.bases) == 0 {
		return skipped("no base recorded in the store (see store): the plugin records one at its first ADD")
	}
	fix := "start metabind-responder: its repair loop restores them within seconds; or run metabindctl gc"
	var problems []string
	for _, b := range s.bases {
		rd, err := redirect.ForBase(b)
		if err != nil {
			return failed(fix, "base %s: %v", b.Key(), err)
		}
		found, err := rd.AuditBase()
		if err != nil {
			return failed("check that iptables works on this node", "base %s: %v", b.Key(), err)
		}
		for _, p := range found {
			problems = append(problems, fmt.Sprintf("%s (base %s)", p, b.Metadata))
		}
	}
	if len(problems) > 0 {
		return failed(fix, "%s: %s", plural(len(problems), "problem", "problems"), firstFew(problems))
	}
	return ok("%s: chains, jumps and block rules whole", plural(len(s.bases), "base", "bases"))
}

// checkPodRules: every binding has its per-pod rules and every per-pod rule
// a binding.
func checkPodRules(_ context.Context, n *node) Result {
	p, err := ListPodRules(n.StateDir, n.Timeout)
	if err != nil {
		return failed("check that iptables works on this node and that the store reads (see store)", "%v", err)
	}
	orphans := p.Orphans()
	detail := plural(len(p.Bindings), "binding", "bindings") + ", " + plural(len(p.Rules), "per-pod rule", "per-pod rules")
	if len(orphans) == 0 && len(p.Missing) == 0 {
		return ok("%s: every binding has its rules and every rule a binding", detail)
	}
	var bad []string
	if len(p.Missing) > 0 {
		var ips []string
		for _, b := range p.Missing {
			ips = append(ips, fmt.Sprintf("%s (%s/%s)", b.IP, b.Namespace, b.Pod))
		}
		bad = append(bad, fmt.Sprintf("%s: %s", plural(len(p.Missing), "binding without its rules", "bindings without their rules"), firstFew(ips)))
	}
	if len(orphans) > 0 {
		var rules []string
		for _, o := range orphans {
			rules = append(rules, fmt.Sprintf("%s %s %s/%s", o.Chain, o.IP, short(o.ContainerID), o.IfName))
		}
		bad = append(bad, fmt.Sprintf("%s: %s", plural(len(orphans), "rule without a binding", "rules without a binding"), firstFew(rules)))
	}
	return failed("metabindctl gc (restores missing rules, removes orphans; `metabindctl gc --dry-run` shows what it would do); metabindctl rules list shows them all",
		"%s; %s", detail, strings.Join(bad, "; "))
}

// firstFew joins the first few items and counts the rest.
func firstFew(items []string) string {
	if len(items) <= shown {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:shown], ", "), len(items)-shown)
}

// short cuts a container ID to the 13 characters crictl shows.
func short(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}
