package plugin

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// specKeys may be in any plugin's config without NetConf reading them: the
// CNI spec's reserved and well-known keys, the conflist keys tools copy
// into a single plugin's config, and the GC list's old name. (name,
// cniVersion, prevResult, runtimeConfig, capabilities, ipam, dns and
// cni.dev/valid-attachments are NetConf's own json keys.)
var specKeys = []string{
	// The spec's reserved and well-known plugin keys.
	"args", "ipMasq",
	// libcni 1.2.0-1.2.2 sent the GC list under this name; later versions
	// send both. (specKeyPrefix accepts it too; listed, it can be
	// suggested.)
	"cni.dev/attachments",
	// Conflist keys.
	"cniVersions", "disableCheck", "disableGC", "loadOnlyInlinedPlugins",
}

// specKeyPrefix: the spec reserves every key under it for runtimes.
const specKeyPrefix = "cni.dev/"

// knownKeys is every top-level key a metabind netconf may have: the json
// keys of NetConf, read from the struct itself so that a new field is known
// the moment it is declared, and specKeys. Sorted, so that suggestions do
// not depend on map order.
var knownKeys = func() []string {
	keys := append(jsonKeys(reflect.TypeFor[NetConf]()), specKeys...)
	sort.Strings(keys)
	return slices.Compact(keys)
}()

// jsonKeys are the object keys encoding/json decodes into struct type t,
// by its rules: the fields of an untagged embedded struct (types.NetConf)
// are promoted, "-" and unexported fields are not read.
func jsonKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if !f.IsExported() && !(f.Anonymous && ft.Kind() == reflect.Struct) {
			continue // an unexported embedded struct may still promote exported fields
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" && f.Anonymous && ft.Kind() == reflect.Struct {
			keys = append(keys, jsonKeys(ft)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		keys = append(keys, name)
	}
	return keys
}

// checkKeys refuses a netconf with a top-level key metabind does not know,
// naming the nearest known one: encoding/json drops unknown keys, so a
// misspelled metadataAdress6 would silently leave IPv6 unprotected. The
// match is exact although encoding/json would also take "StateDir" for
// stateDir: other readers of the conflist, and people, do not. Keys inside
// runtimeConfig, args, ipam and dns belong to runtimes and other plugins
// and are not checked.
func checkKeys(stdin []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &raw); err != nil {
		return fmt.Errorf("parse netconf: %w", err)
	}
	var unknown []string
	for key := range raw {
		if !slices.Contains(knownKeys, key) && !strings.HasPrefix(key, specKeyPrefix) {
			unknown = append(unknown, key)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	msgs := make([]string, len(unknown))
	for i, key := range unknown {
		msgs[i] = fmt.Sprintf("netconf key %q is not known; did you mean %q?", key, nearest(key, knownKeys))
	}
	return &UnknownKeysError{msg: strings.Join(msgs, "; ")}
}

// UnknownKeysError is ParseConfig's answer to a netconf with keys metabind
// does not know. DEL goes on despite it (see Plugin.run): a typo must not
// leave pods stuck in Terminating while the admin fixes the conflist.
type UnknownKeysError struct{ msg string }

func (e *UnknownKeysError) Error() string { return e.msg }

// nearest is the candidate with the smallest edit distance to s, the first
// in order on a tie.
func nearest(s string, candidates []string) string {
	best, bestDist := "", -1
	for _, c := range candidates {
		if d := editDistance(s, c); bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b: the fewest
// single-character insertions, deletions and substitutions that turn one
// into the other.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			sub := prev[j-1]
			if ra[i-1] != rb[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
