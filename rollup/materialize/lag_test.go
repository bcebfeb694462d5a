package materialize

import (
	"testing"
	"time"
)

// TestReplicaLag holds the cluster allowances to hand-computed values: the delay setting is
// whole seconds rounded up and at least one, and the visibility adds the clock skew rounded
// up and the second of the servers' clock resolution.
func TestReplicaLag(t *testing.T) {
	for _, tc := range []struct {
		delay, skew time.Duration
		wantDelay   int
		wantVis     time.Duration
	}{
		{0, 0, 0, 0},
		{5 * time.Second, time.Second, 5, 7 * time.Second},
		{5 * time.Second, 0, 5, 6 * time.Second},
		{1500 * time.Millisecond, 200 * time.Millisecond, 2, 4 * time.Second},
		{100 * time.Millisecond, 0, 1, 2 * time.Second},
		{0, 3 * time.Second, 1, 5 * time.Second},
	} {
		d, v := replicaLag(tc.delay, tc.skew)
		if d != tc.wantDelay || v != tc.wantVis {
			t.Errorf("replicaLag(%s, %s) = %d, %s; want %d, %s", tc.delay, tc.skew, d, v, tc.wantDelay, tc.wantVis)
		}
	}
}
