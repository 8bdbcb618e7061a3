package plugin

// CrashEnv names the step at which a plugin built with -tags
// metabind_testhooks kills itself with SIGKILL, to prove crash consistency
// (crash_testhook.go). The shipped binary never reads it.
const CrashEnv = "METABIND_TEST_CRASH_AT"

// CrashSteps are the checkpoints of ADD and DEL, in order.
// (A pod's rules go in and out in one iptables-restore run, which has no
// step in between; the rule-by-rule fallback has "first-rule-piece".)
var CrashSteps = []string{
	"add:in-transaction", "add:committed", "add:rules-added",
	"del:committed", "del:rules-removed",
}
