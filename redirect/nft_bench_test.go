package redirect

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// BenchmarkAddDel times a pod's ADD and DEL on the redirect's hot path
// (AddBatch without verify, RemoveBatch) with 10 and 1,000 pods already
// bound, for each backend, in a throwaway network namespace (root):
//
//	go test -run '^$' -bench AddDel -benchtime 200x ./redirect/
func BenchmarkAddDel(b *testing.B) {
	for _, backend := range []string{BackendIPTables, BackendNFTables} {
		for _, existing := range []int{10, 1000} {
			b.Run(fmt.Sprintf("%s/%d", backend, existing), func(b *testing.B) {
				_, netns := nftInNS(b)
				err := netns.Do(func(ns.NetNS) error {
					mk, _ := MakerFor(backend)
					rd, err := mk(testMeta, testResp)
					if err != nil {
						return err
					}
					if _, err := rd.EnsureBase(); err != nil {
						return err
					}
					pods := make([]Rule, existing)
					for i := range pods {
						pods[i] = benchRule(i)
					}
					if err := rd.AddBatch(pods, false); err != nil {
						return err
					}
					var add, del time.Duration
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						r := benchRule(existing + 1 + i%50)
						t0 := time.Now()
						if err := rd.AddBatch([]Rule{r}, false); err != nil {
							return err
						}
						t1 := time.Now()
						if err := rd.RemoveBatch([]Rule{r}); err != nil {
							return err
						}
						add, del = add+t1.Sub(t0), del+time.Since(t1)
					}
					b.ReportMetric(float64(add.Microseconds())/float64(b.N)/1000, "add-ms/op")
					b.ReportMetric(float64(del.Microseconds())/float64(b.N)/1000, "del-ms/op")
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

func benchRule(i int) Rule {
	return Rule{HostInterface: fmt.Sprintf("veth%d", i), IP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
		Responder: testResp, ContainerID: fmt.Sprintf("%064d", i), IfName: "eth0"}
}
