package store

import "testing"

// FuzzDecodeBinding: a stored record either decodes into a binding whose
// IP is the record's key, or is refused; never a panic.
func FuzzDecodeBinding(f *testing.F) {
	good, _ := encodeBinding(binding("10.0.0.2", "c1", "a"))
	f.Add([]byte("10.0.0.2"), good)
	f.Add([]byte("10.0.0.3"), good)
	f.Add([]byte("10.0.0.2"), []byte(`{"ip":"10.0.0.2","annotations":{"a":1}}`))
	f.Add([]byte("::ffff:10.0.0.2"), []byte(`{"ip":"::ffff:10.0.0.2"}`))
	f.Add([]byte(""), []byte(`{}`))
	f.Add([]byte("x"), []byte(`{"ip":"x"}`))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		b, err := decodeBinding(key, value)
		if err == nil && (!b.IP.IsValid() || b.IP.String() != string(key)) {
			t.Fatalf("record %q decoded under key %q", b.IP, key)
		}
		decodeIPList(Attachment{}, value)
	})
}
