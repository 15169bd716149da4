//go:build race

package apaleo

// raceEnabled: the race detector randomizes the scheduler's choices, so goroutines that
// wake at one virtual moment may run in another order from one run to the next.
const raceEnabled = true
