package plugin

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Helper process for TestLogRotationUnderConcurrentWriters: one plugin
// process's worth of log lines, through the plugin's own logger.
const (
	logWriterEnv   = "METABIND_TEST_LOG_WRITER" // "<path> <writer> <lines> <maxBytes> <backups>"
	rotationBytes  = 16 << 10
	rotationBackup = 30 // room for every line: none falls off the end
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(logWriterEnv); spec != "" {
		var path string
		var writer, lines, maxBytes, backups int
		if _, err := fmt.Sscan(spec, &path, &writer, &lines, &maxBytes, &backups); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		writeLines(&rotatingFile{path: path, maxBytes: int64(maxBytes), backups: backups}, writer, lines)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// writeLines logs n numbered lines as writer w, as a plugin call does:
// slog's JSON handler, one Write per record.
func writeLines(f *rotatingFile, w, n int) {
	log := slog.New(slog.NewJSONHandler(f, nil))
	for i := range n {
		log.Info("metabind ADD done", "writer", w, "seq", i, "pad", strings.Repeat("x", 40+i%50))
	}
}

// logLine is what the test reads back of a line.
type logLine struct {
	Msg    string `json:"msg"`
	Writer int    `json:"writer"`
	Seq    int    `json:"seq"`
}

// Plugin processes that start together all write the one log file while
// it rotates. Every line must come out whole (valid JSON), none lost, each
// writer's lines in order from the oldest backup to the current file, no
// file much over the limit, at most logMaxBackups backups, and the line
// written last in the current file. Both separate processes (the real
// case) and goroutines (each write its own open, as in a process) are run.
func TestLogRotationUnderConcurrentWriters(t *testing.T) {
	const writers, perWriter = 32, 60
	for _, mode := range []string{"processes", "goroutines"} {
		t.Run(mode, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cni.log")
			f := &rotatingFile{path: path, maxBytes: rotationBytes, backups: rotationBackup}
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range writers {
				wg.Go(func() {
					if mode == "goroutines" {
						writeLines(f, w, perWriter)
						return
					}
					cmd := exec.Command(os.Args[0], "-test.run=^$")
					cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d %d %d", logWriterEnv, path, w, perWriter, rotationBytes, rotationBackup))
					if out, err := cmd.CombinedOutput(); err != nil {
						errs <- fmt.Errorf("writer %d: %v: %s", w, err, out)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			slog.New(slog.NewJSONHandler(f, nil)).Info("last")

			// Oldest first: the last backup ... path.1, then path.
			var files []string
			for i := rotationBackup + 1; i >= 1; i-- {
				if _, err := os.Stat(f.backup(i)); err == nil {
					if i > rotationBackup {
						t.Fatalf("%s exists: more than %d backups", f.backup(i), rotationBackup)
					}
					files = append(files, f.backup(i))
				}
			}
			files = append(files, path)
			next := make([]int, writers) // each writer's next expected seq
			total := 0
			var last logLine
			for _, name := range files {
				st, err := os.Stat(name)
				if err != nil {
					t.Fatal(err)
				}
				// A rotation follows the write that filled the file; lines
				// racing it may land after, each under 200 bytes.
				if st.Size() > rotationBytes+writers*200 {
					t.Errorf("%s is %d bytes, limit %d", name, st.Size(), rotationBytes)
				}
				file, err := os.Open(name)
				if err != nil {
					t.Fatal(err)
				}
				sc := bufio.NewScanner(file)
				for sc.Scan() {
					var l logLine
					if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
						t.Fatalf("%s: torn line %q: %v", name, sc.Text(), err)
					}
					total++
					last = l
					if l.Msg == "last" {
						continue
					}
					if l.Seq < next[l.Writer] {
						t.Fatalf("%s: writer %d line %d after its line %d: a rotation reordered lines", name, l.Writer, l.Seq, next[l.Writer]-1)
					}
					next[l.Writer] = l.Seq + 1
				}
				file.Close()
			}
			// The files hold every line (the test writes less than
			// (backups+1) files' worth, so nothing falls off the end).
			if want := writers*perWriter + 1; total != want {
				t.Fatalf("%d lines in %d files, want %d", total, len(files), want)
			}
			if len(files) < 10 {
				t.Fatalf("%d files: the test should have rotated 10 times at least", len(files))
			}
			if last.Msg != "last" {
				t.Fatalf("the line written last is not the last of %s: %+v", path, last)
			}
		})
	}
}

// Past the last backup, the oldest lines go, whole files at a time, even
// with writers racing; with logMaxBackups 0 the file starts over.
func TestLogRotationDropsOldestBackup(t *testing.T) {
	for _, backups := range []int{0, 2} {
		t.Run(strconv.Itoa(backups), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cni.log")
			f := &rotatingFile{path: path, maxBytes: 2 << 10, backups: backups}
			var wg sync.WaitGroup
			for w := 1; w <= 8; w++ {
				wg.Go(func() { writeLines(f, w, 100) }) // about 110 KB in all: many rotations
			}
			wg.Wait()
			writeLines(f, 0, 500)
			if _, err := os.Stat(f.backup(backups + 1)); err == nil {
				t.Fatalf("%s exists", f.backup(backups+1))
			}
			if backups > 0 {
				if _, err := os.Stat(f.backup(backups)); err != nil {
					t.Fatal(err)
				}
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), `"seq":499`) {
				t.Fatalf("the newest line is not in %s", path)
			}
		})
	}
}
