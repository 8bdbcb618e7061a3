// Package testproc runs a test's long-lived helper processes (a control
// plane, a container runtime, a kubelet, a DNS server), each with its output
// in a log file, so that none outlives the test binary: every process is
// forked from one OS thread that lives as long as its Spawner and gets
// SIGKILL when that thread ends (Pdeathsig follows the thread that forked,
// not the process), even when the test binary dies without its cleanups (a
// timeout panic). A thread of Go's pool could end at any time.
package testproc

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// Spawner starts processes from its own OS thread; Close ends the thread,
// and with it every process it started that still runs.
type Spawner struct {
	reqs chan spawnReq
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

// NewSpawner starts the spawning thread.
func NewSpawner() *Spawner {
	s := &Spawner{reqs: make(chan spawnReq)}
	go func() {
		// Never unlocked: when this goroutine returns, its thread exits
		// with it, and every child still running gets SIGKILL.
		runtime.LockOSThread()
		for r := range s.reqs {
			r.done <- r.cmd.Start()
		}
	}()
	return s
}

func (s *Spawner) start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	done := make(chan error)
	s.reqs <- spawnReq{cmd: cmd, done: done}
	return <-done
}

// Close ends the spawning thread: processes still running get SIGKILL.
func (s *Spawner) Close() { close(s.reqs) }

// Proc is one process, its stdout and stderr appended to LogPath. It may be
// started again after it stopped.
type Proc struct {
	Name    string
	Argv    []string
	LogPath string

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// New describes a process; Start runs it.
func New(name, logPath string, argv ...string) *Proc {
	return &Proc{Name: name, Argv: argv, LogPath: logPath}
}

// Start runs the process from s.
func (p *Proc) Start(s *Spawner) error {
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.Argv[0], p.Argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := s.start(cmd); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.cmd, p.exited, p.waitErr = cmd, make(chan struct{}), nil
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return nil
}

// Kill stops the process at once and waits for it.
func (p *Proc) Kill() {
	if p.cmd == nil {
		return
	}
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd = nil
}

// Stop asks the process to end (SIGTERM) and kills it after grace; it
// reports whether the process ended by itself.
func (p *Proc) Stop(grace time.Duration) bool {
	if p.cmd == nil {
		return true
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		p.cmd = nil
		return true
	case <-time.After(grace):
		p.Kill()
		return false
	}
}

// Started reports whether the process was started and not stopped since.
func (p *Proc) Started() bool { return p.cmd != nil }

// Running reports whether the process runs.
func (p *Proc) Running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Exited is closed when the running process exits.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Err is how the process ended (once it has).
func (p *Proc) Err() error { return p.waitErr }

// PID is the process's ID, 0 when it was not started.
func (p *Proc) PID() int {
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Tail is the end of the process's log, for failure messages.
func (p *Proc) Tail(lines int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return err.Error()
	}
	b = bytes.TrimRight(b, "\n")
	for i, n := len(b)-1, 0; i >= 0; i-- {
		if b[i] == '\n' {
			if n++; n == lines {
				return string(b[i+1:])
			}
		}
	}
	return string(b)
}
