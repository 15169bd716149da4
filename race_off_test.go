//go:build !race

package apaleo

const raceEnabled = false
