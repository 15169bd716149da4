package apaleo

import "time"

// outage.go: an outage of apaleo is the app's, like a 429. After outageAfter failures in
// a row of one config's token requests that say apaleo is not answering (a 5xx, a
// timeout, a refused or dropped connection, an unreadable answer), the config is down:
// none of its token requests goes out but one probe at a time.

// outageAfter failures in a row take a config down.
const outageAfter = 5

// probeDelays are the waits before the first probes of an outage, each after the one
// before; then every probeSteady (±20 %).
var probeDelays = []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second}

const probeSteady = 30 * time.Second
