package devidp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// AdminPrefix is where AdminHandler expects to be mounted.
const AdminPrefix = "/_admin/"

// AdminHandler serves a test-only control API under /_admin/ (mount it at
// AdminPrefix, with the full path). It has no authentication: expose it only
// on a loopback test server.
//
//	GET    /_admin/stats                   200, Stats as JSON
//	POST   /_admin/reset                   204; zero the stats and clear queued faults
//	POST   /_admin/faults                  204; body: a JSON list of faults (or one fault), appended
//	DELETE /_admin/faults                  204; clear queued faults
//	POST   /_admin/revoke?client_id=ID     204; RevokeRefreshTokens(ID)
//	POST   /_admin/clients                 204; body: a JSON Client or list of them; AddClient each
//
// Errors are 4xx with {"error": "..."}.
func (s *Server) AdminHandler() http.Handler {
	return http.HandlerFunc(s.serveAdmin)
}

func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	route := strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(AdminPrefix, "/"))
	switch {
	case route == "/stats" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		writeJSON(w, http.StatusOK, s.Stats())
	case route == "/reset" && r.Method == http.MethodPost:
		s.ResetStats()
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case route == "/faults" && r.Method == http.MethodPost:
		var faults []Fault
		if err := decodeOneOrList(r.Body, &faults); err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.InjectFaults(faults...)
		w.WriteHeader(http.StatusNoContent)
	case route == "/faults" && r.Method == http.MethodDelete:
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case route == "/revoke" && r.Method == http.MethodPost:
		id := r.URL.Query().Get("client_id")
		if id == "" {
			adminError(w, http.StatusBadRequest, "query parameter client_id is required")
			return
		}
		s.RevokeRefreshTokens(id)
		w.WriteHeader(http.StatusNoContent)
	case route == "/clients" && r.Method == http.MethodPost:
		var clients []Client
		if err := decodeOneOrList(r.Body, &clients); err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		for _, c := range clients {
			if _, err := c.normalize(); err != nil {
				adminError(w, http.StatusBadRequest, err.Error())
				return
			}
		}
		for _, c := range clients {
			if err := s.AddClient(c); err != nil {
				adminError(w, http.StatusBadRequest, err.Error())
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	case route == "/stats" || route == "/reset" || route == "/faults" || route == "/revoke" || route == "/clients":
		adminError(w, http.StatusMethodNotAllowed, "method not allowed")
	default:
		adminError(w, http.StatusNotFound, "no such admin route")
	}
}

func adminError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// decodeOneOrList decodes a JSON list, or a single object as a list of one,
// into *[]T. Unknown keys are an error.
func decodeOneOrList[T any](body io.Reader, out *[]T) error {
	data, err := io.ReadAll(io.LimitReader(body, 1<<20))
	if err != nil {
		return err
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return fmt.Errorf("empty body: want JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if data[0] == '[' {
		return dec.Decode(out)
	}
	var one T
	if err := dec.Decode(&one); err != nil {
		return err
	}
	*out = []T{one}
	return nil
}
