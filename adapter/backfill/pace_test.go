package backfill

import (
	"context"
	"testing"

	"golang.org/x/time/rate"
)

// TestPaceWaitsInBursts: a batch larger than the limiter's burst is paced in bursts, where
// one WaitN of the whole batch would fail.
func TestPaceWaitsInBursts(t *testing.T) {
	w := &writer{limiter: rate.NewLimiter(1e9, 10)}
	if err := w.limiter.WaitN(context.Background(), 25); err == nil {
		t.Fatal("the limiter takes more than its burst at once; the test proves nothing")
	}
	if err := w.pace(context.Background(), 25); err != nil {
		t.Fatalf("pace 25 rows with a burst of 10: %v", err)
	}
	if err := (&writer{}).pace(context.Background(), 1<<30); err != nil {
		t.Fatalf("pace without a limit: %v", err)
	}
}
