package apaleo

import (
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// TestEngine_ImportRaceRevokes: the name is taken while apaleo redeems the imported
// refresh token: the import answers 409, keeps what is there, and revokes the new token.
func TestEngine_ImportRaceRevokes(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.idp.gate = make(chan struct{})
	e.idp.started = make(chan string, 1)
	type answer struct {
		resp *logical.Response
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := e.do(logical.CreateOperation, "creds/hotel-ber", map[string]any{"config": "connect", "refresh_token": "rt-x"})
		done <- answer{resp, err}
	}()
	<-e.idp.started
	e.authorized("hotel-ber", "connect", "rt-other") // authorized meanwhile
	close(e.idp.gate)
	a := <-done
	if code := statusOf(logical.CreateOperation, a.resp, a.err); code != http.StatusConflict || !strings.Contains(errText(a.resp, a.err), "revoked") {
		t.Fatalf("%d %s", code, errText(a.resp, a.err))
	}
	if n := e.idp.count("revoke"); n != 1 {
		t.Fatalf("%d revocations, want 1", n)
	}
	if got := e.stored("hotel-ber"); got.RefreshToken != "rt-other" {
		t.Fatalf("the credential authorized meanwhile was replaced: %q", got.RefreshToken)
	}
}
