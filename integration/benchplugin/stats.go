package main

import (
	"fmt"
	"slices"
	"time"
)

// pct is the p-th percentile of d (the lower of two middles for p50).
func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
}

// times prints a ratio; one with nothing or less below it (an added time
// lost in the noise) has no meaning.
func times(a, b time.Duration) string {
	if b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", float64(a)/float64(b))
}

// verdict marks a row against its target, ADD and DEL each.
func verdict(target string, addMet, delMet bool) string {
	word := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT MET"
	}
	if addMet == delMet {
		return target + ": " + word(addMet)
	}
	return target + ": ADD " + word(addMet) + ", DEL " + word(delMet)
}
