//go:build !metabind_testhooks

package plugin

// testCheckpoint is nil in the shipped plugin: no test hook, no environment
// variable read (see crash_testhook.go).
func testCheckpoint() func(string) { return nil }
