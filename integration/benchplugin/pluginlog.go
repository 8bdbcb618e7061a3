package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"time"
)

// pluginTimes reads a node's metabind log: each verb logs one JSON line
// (plugin.run) whose "ms" is the plugin's own time, from parsing its input
// to its answer. What the chain adds beyond it is exec, the Go runtime's
// start, skel and libcni.
func pluginTimes(logFile string) (add, del []time.Duration, err error) {
	f, err := os.Open(logFile)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			Verb string  `json:"verb"`
			MS   float64 `json:"ms"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		d := time.Duration(line.MS * float64(time.Millisecond))
		switch line.Verb {
		case "ADD":
			add = append(add, d)
		case "DEL":
			del = append(del, d)
		}
	}
	return add, del, sc.Err()
}

// resetLogs empties the chains' logs after the warm-up, so that what they
// hold next matches the pods measured. The plugin opens the file for each
// line (O_APPEND), so emptying it between pods is safe.
func resetLogs(chains []*chainRun) error {
	for _, c := range chains {
		if err := os.Truncate(c.node.logFile, 0); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
