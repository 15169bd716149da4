package memlimit

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// TestFor: the floor while the live heap is small, then 1.5 times the live heap, never a
// limit the live heap is near (the collector would run without pause).
func TestFor(t *testing.T) {
	for _, c := range []struct {
		live uint64
		want int64
	}{
		{0, Floor},
		{40 << 20, Floor},
		{47 << 20, Floor},
		{Floor * 2 / 3, Floor},
		{50 << 20, 75 << 20},
		{100 << 20, 150 << 20},
		{1 << 30, 3 << 29},
	} {
		if got := For(c.live); got != c.want {
			t.Errorf("For(%d MiB) = %d MiB, want %d MiB", c.live>>20, got>>20, c.want>>20)
		}
	}
}

// TestStart: an operator's GOMEMLIMIT or GOGC=off is left alone; otherwise the floor is set.
func TestStart(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })

	t.Setenv("GOMEMLIMIT", "1GiB")
	if Start() {
		t.Error("Start with GOMEMLIMIT set: applied, want left alone")
	}
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Errorf("limit %d after Start with GOMEMLIMIT set, want unchanged %d", got, before)
	}
}

// TestStartSetsFloor: without GOMEMLIMIT and with GOGC not off, Start sets the floor.
func TestStartSetsFloor(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	t.Setenv("GOMEMLIMIT", "")
	os.Unsetenv("GOMEMLIMIT") // t.Setenv restores it
	t.Setenv("GOGC", "100")
	if !Start() {
		t.Fatal("Start without GOMEMLIMIT: left alone, want the policy applied")
	}
	if got := debug.SetMemoryLimit(-1); got != Floor {
		t.Errorf("limit %d MiB after Start, want the floor %d MiB", got>>20, Floor>>20)
	}
}

// TestFollow: at a tick the limit follows the live heap the runtime measured, here 96
// MiB held live, so 1.5 times that (plus what else the test binary holds), above the
// floor.
func TestFollow(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	debug.SetMemoryLimit(Floor)
	held := make([]byte, 96<<20)
	runtime.GC() // the live heap is measured at the end of a cycle
	ticks := make(chan time.Time, 1)
	ticks <- time.Now()
	close(ticks)
	follow(ticks)
	runtime.KeepAlive(held)
	got := debug.SetMemoryLimit(-1)
	if lo, hi := int64(96<<20)*3/2, int64((96+16)<<20)*3/2; got < lo || got > hi {
		t.Errorf("limit %d MiB after a tick with 96 MiB live, want %d-%d MiB", got>>20, lo>>20, hi>>20)
	}
}
