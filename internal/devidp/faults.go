package devidp

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Fault is a misbehaviour of the token endpoint. Queued faults are consumed
// one per POST /connect/token request, first in first out. The steps run in
// this order: Delay, then Hang or Drop or Status (first set wins), else normal
// handling, with Set / Truncate / NoExpiresIn / DropAfterHandle applied to its
// answer.
//
// JSON form (POST /_admin/faults takes a list or one object; unknown keys are
// an error):
//
//	{"status": 503, "retry_after": "2", "body": "...", "delay": "1.5s",
//	 "hang": true, "drop": true, "truncate": true, "no_expires_in": true,
//	 "drop_after_handle": true, "set": {"token_type": "mac", "expires_in": 0}}
//
// "delay" is a Go duration string ("250ms", "2s") or a number of seconds.
type Fault struct {
	// Status, if non-zero, is answered instead of handling the request.
	Status int
	// RetryAfter is sent as the Retry-After header with Status (seconds or
	// an HTTP date).
	RetryAfter string
	// Body is sent with Status, as application/json if it starts with "{"
	// or "[", text/plain otherwise. Default: {"error":"slow_down",...} for
	// 429, {"error":"server_error",...} for 5xx, {"error":"invalid_request",
	// ...} for other codes, each with "error_description":"injected fault".
	Body string
	// Delay waits before anything else (then the request is handled
	// normally unless another field says otherwise). Close cuts it short.
	Delay time.Duration
	// Hang never answers: the request is held until the client gives up or
	// Close is called, then the connection is closed without an answer.
	Hang bool
	// Drop closes the TCP connection without an answer.
	Drop bool
	// Truncate handles the request normally but sends only the first half
	// of the JSON body (with a matching Content-Length).
	Truncate bool
	// NoExpiresIn handles the request normally and removes expires_in from
	// a successful answer.
	NoExpiresIn bool
	// DropAfterHandle handles the request normally (so a refresh token IS
	// rotated and a code IS used up server-side), then closes the connection
	// without sending the answer.
	DropAfterHandle bool
	// Set handles the request normally (a refresh token IS rotated) and
	// replaces these fields of a successful JSON answer: an answer a client
	// must refuse, such as token_type "mac" or expires_in 0.
	Set map[string]json.RawMessage
}

// String describes f for logs.
func (f Fault) String() string {
	var parts []string
	if f.Delay > 0 {
		parts = append(parts, "delay="+f.Delay.String())
	}
	switch {
	case f.Hang:
		parts = append(parts, "hang")
	case f.Drop:
		parts = append(parts, "drop")
	case f.Status != 0:
		parts = append(parts, "status="+strconv.Itoa(f.Status))
	}
	if f.Truncate {
		parts = append(parts, "truncate")
	}
	if len(f.Set) > 0 {
		parts = append(parts, "set")
	}
	if f.NoExpiresIn {
		parts = append(parts, "no_expires_in")
	}
	if f.DropAfterHandle {
		parts = append(parts, "drop_after_handle")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

type faultJSON struct {
	Status          int                        `json:"status,omitempty"`
	RetryAfter      string                     `json:"retry_after,omitempty"`
	Body            string                     `json:"body,omitempty"`
	Delay           json.RawMessage            `json:"delay,omitempty"`
	Hang            bool                       `json:"hang,omitempty"`
	Drop            bool                       `json:"drop,omitempty"`
	Truncate        bool                       `json:"truncate,omitempty"`
	NoExpiresIn     bool                       `json:"no_expires_in,omitempty"`
	DropAfterHandle bool                       `json:"drop_after_handle,omitempty"`
	Set             map[string]json.RawMessage `json:"set,omitempty"`
}

// MarshalJSON writes the JSON form described at Fault.
func (f Fault) MarshalJSON() ([]byte, error) {
	j := faultJSON{
		Status: f.Status, RetryAfter: f.RetryAfter, Body: f.Body,
		Hang: f.Hang, Drop: f.Drop, Truncate: f.Truncate,
		NoExpiresIn: f.NoExpiresIn, DropAfterHandle: f.DropAfterHandle, Set: f.Set,
	}
	if f.Delay != 0 {
		j.Delay, _ = json.Marshal(f.Delay.String())
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the JSON form described at Fault.
func (f *Fault) UnmarshalJSON(data []byte) error {
	var j faultJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("fault: %w", err)
	}
	var d time.Duration
	if len(j.Delay) > 0 && string(j.Delay) != "null" {
		var str string
		var secs float64
		switch {
		case json.Unmarshal(j.Delay, &str) == nil:
			var err error
			if d, err = time.ParseDuration(str); err != nil {
				return fmt.Errorf("fault: delay: %w", err)
			}
		case json.Unmarshal(j.Delay, &secs) == nil:
			d = time.Duration(secs * float64(time.Second))
		default:
			return fmt.Errorf("fault: delay must be a duration string or a number of seconds, not %s", j.Delay)
		}
		if d < 0 {
			return errors.New("fault: negative delay")
		}
	}
	if j.Status != 0 && (j.Status < 100 || j.Status > 599) {
		return fmt.Errorf("fault: status %d out of range", j.Status)
	}
	*f = Fault{
		Status: j.Status, RetryAfter: j.RetryAfter, Body: j.Body, Delay: d,
		Hang: j.Hang, Drop: j.Drop, Truncate: j.Truncate,
		NoExpiresIn: j.NoExpiresIn, DropAfterHandle: j.DropAfterHandle, Set: j.Set,
	}
	return nil
}

// InjectFaults queues faults; each is consumed by one later POST
// /connect/token request (FIFO).
func (s *Server) InjectFaults(f ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f...)
}

// ClearFaults drops all queued faults.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// takeFault counts a token request (per refresh token too), adds it to the timeline
// (entry: nil when the timeline is full) and pops the next fault, if any.
func (s *Server) takeFault(grant, client, scope, refreshToken string) (f Fault, faulted bool, entry *TokenRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.TokenRequests++
	s.stats.ByGrant[grant]++
	if refreshToken != "" {
		if s.refreshSent == nil {
			s.refreshSent = map[[sha256.Size]byte]int{}
		}
		sum := sha256.Sum256([]byte(refreshToken))
		s.refreshSent[sum]++
		s.stats.RefreshTokenMostSent = max(s.stats.RefreshTokenMostSent, s.refreshSent[sum])
	}
	if _, ok := s.stats.ByClient[client]; ok || len(s.stats.ByClient) < maxClientsCounted {
		s.stats.ByClient[client]++
	}
	if grant == GrantClientCredentials {
		words := strings.Fields(scope)
		slices.Sort(words)
		s.stats.ByScope[strings.Join(words, " ")]++
	}
	now := time.Now().UnixMilli()
	if len(s.stats.RequestTimes) < maxRequestTimes {
		s.stats.RequestTimes = append(s.stats.RequestTimes, now)
	}
	if len(s.timeline) < maxRequestTimes {
		entry = &TokenRequest{Arrived: now, Grant: grant, Client: client, RefreshToken: refreshTokenID(grant, refreshToken)}
		s.timeline = append(s.timeline, entry)
	}
	if len(s.faults) == 0 {
		return Fault{}, false, entry
	}
	f = s.faults[0]
	s.faults = s.faults[1:]
	s.stats.FaultsApplied++
	if entry != nil {
		entry.Fault = f.String()
	}
	return f, true, entry
}

// answered completes a token request's timeline entry: when, and the status w (the
// request's statusWriter) answered, 0 for none. Deferred: it runs when a fault drops
// the connection by a panic too.
func (s *Server) answered(entry *TokenRequest, w http.ResponseWriter) {
	if entry == nil {
		return
	}
	status := 0
	if sw, ok := w.(*statusWriter); ok {
		status = sw.status
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	entry.Answered = time.Now().UnixMilli()
	entry.Status = status
}

// refreshTokenID is the fingerprint of the refresh token a refresh_token grant
// presents (TokenRequest.RefreshToken), "" for other grants.
func refreshTokenID(grant, rt string) string {
	if grant != GrantRefreshToken || rt == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(rt))
	return hex.EncodeToString(sum[:8])
}

// applyPreFault runs Delay, Hang, Drop and Status; it reports whether the
// request is done.
func (s *Server) applyPreFault(w http.ResponseWriter, r *http.Request, f Fault) bool {
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-s.closed:
			t.Stop()
		case <-r.Context().Done():
			t.Stop()
			panic(http.ErrAbortHandler) // the client left
		}
	}
	switch {
	case f.Hang:
		select {
		case <-r.Context().Done():
		case <-s.closed:
		}
		dropConnection(w)
		return true
	case f.Drop:
		dropConnection(w)
		return true
	case f.Status != 0:
		body := f.Body
		if body == "" {
			code := "invalid_request"
			switch {
			case f.Status == http.StatusTooManyRequests:
				code = "slow_down"
			case f.Status >= 500:
				code = "server_error"
			}
			body = `{"error":"` + code + `","error_description":"injected fault"}`
		}
		if strings.HasPrefix(body, "{") || strings.HasPrefix(body, "[") {
			w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		} else {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		}
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(f.Status)
		_, _ = w.Write([]byte(body))
		return true
	}
	return false
}

// applyPostFault sends the recorded answer as the fault says.
func (s *Server) applyPostFault(w http.ResponseWriter, rec *recorder, f Fault) {
	if f.DropAfterHandle {
		dropConnection(w)
		return
	}
	body := rec.body.Bytes()
	if (f.NoExpiresIn || len(f.Set) > 0) && rec.code == http.StatusOK {
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) == nil {
			if f.NoExpiresIn {
				delete(m, "expires_in")
			}
			maps.Copy(m, f.Set)
			if b, err := json.Marshal(m); err == nil {
				body = b
			}
		}
	}
	if f.Truncate {
		body = body[:len(body)/2]
	}
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rec.code)
	_, _ = w.Write(body)
}

// dropConnection closes the client's TCP connection without an answer.
func dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			if tc, ok := conn.(*tls.Conn); ok {
				_ = tc.NetConn().Close() // no TLS close_notify: like a cut line
			} else {
				_ = conn.Close()
			}
			return
		}
	}
	// HTTP/2 or already hijacked: net/http resets the stream or connection.
	panic(http.ErrAbortHandler)
}

// recorder is a minimal in-memory http.ResponseWriter.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(b)
}
