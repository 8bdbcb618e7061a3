//go:build metabind_testhooks

package plugin

import (
	"os"
	"syscall"
)

// testCheckpoint kills the plugin at the step CrashEnv names: the crash
// tests' hook, built only with -tags metabind_testhooks (bin/test/metabind).
func testCheckpoint() func(string) {
	step := os.Getenv(CrashEnv)
	if step == "" {
		return nil
	}
	return func(at string) {
		if at == step {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
}
