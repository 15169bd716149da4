// Package vaultapi is a small client of Vault's HTTP API, shared by the end-to-end tests
// (e2e/, which wrap it to record a transcript) and the load tool of `make bench`
// (bench/load). The plugin never imports it.
package vaultapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
)

// Client sends requests to one Vault server: paths are below /v1/, bodies JSON.
type Client struct {
	Addr  string // http://127.0.0.1:PORT, without /v1
	Token string // sent as X-Vault-Token; none if empty
	HTTP  *http.Client
}

// New returns a client of the Vault at addr, as token, over hc (shared by its callers,
// so its connections are kept alive across requests).
func New(addr, token string, hc *http.Client) *Client {
	return &Client{Addr: addr, Token: token, HTTP: hc}
}

// Response is one answer: its status, headers and body.
type Response struct {
	Status int
	Header http.Header // nil when no answer came
	Body   []byte
}

// Request builds a request of method to path (below /v1/) as the client's token.
func (c *Client) Request(method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequest(method, c.Addr+"/v1/"+path, body)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("X-Vault-Token", c.Token)
	}
	return req, nil
}

// Send sends method to path with body as JSON (nil for none) as token (none if empty).
// When the body cannot be read in full, the answer so far comes with the error.
func (c *Client) Send(token, method, path string, body any) (Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return Response{}, err
		}
		rd = bytes.NewReader(b)
	}
	as := *c
	as.Token = token
	req, err := as.Request(method, path, rd)
	if err != nil {
		return Response{}, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, err
}

// Do sends method to path with body as JSON (nil for none) and returns status and body.
func (c *Client) Do(method, path string, body any) (int, []byte, error) {
	r, err := c.Send(c.Token, method, path, body)
	return r.Status, r.Body, err
}

// Must is Do that also fails unless the status is one of want.
func (c *Client) Must(method, path string, body any, want ...int) ([]byte, error) {
	code, b, err := c.Do(method, path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if !slices.Contains(want, code) {
		return nil, fmt.Errorf("%s %s: HTTP %d: %s", method, path, code, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// Discard sends method to path without a body, reads the answer's body away and returns
// its status: the request of a load loop, which keeps no body.
func (c *Client) Discard(method, path string) (int, error) {
	req, err := c.Request(method, path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

// ListData is the data of a LIST answer: the keys and, where the path has it, key_info
// (what `vault list -detailed` prints).
type ListData struct {
	Keys    []string                  `json:"keys"`
	KeyInfo map[string]map[string]any `json:"key_info"`
}

// ParseList decodes the body of a LIST answer.
func ParseList(body []byte) (ListData, error) {
	var r struct {
		Data ListData `json:"data"`
	}
	err := json.Unmarshal(body, &r)
	return r.Data, err
}

// Data decodes the data of an answer's body into out.
func Data(body []byte, out any) error {
	r := struct {
		Data any `json:"data"`
	}{Data: out}
	return json.Unmarshal(body, &r)
}
