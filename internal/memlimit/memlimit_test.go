package memlimit

import (
	"runtime/debug"
	"testing"
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
