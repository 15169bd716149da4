// Package devidp is a DEVELOPMENT AND TEST stand-in for apaleo's identity
// server (Duende IdentityServer at https://identity.apaleo.com), in the spirit
// of `vault server -dev`. Never use it in production: all state (clients,
// codes, refresh tokens) lives in memory, the RSA signing key is generated at
// start-up, the authorize endpoint consents automatically for a built-in test
// user without any login, and faults can be injected on purpose.
//
// The OAuth 2.0 protocol work is done by github.com/ory/fosite (compose
// package, JWT access-token strategy, PKCE handler); this package only wires
// it up the way apaleo behaves:
//
//   - POST /connect/token: grant types client_credentials,
//     authorization_code and refresh_token. Client authentication by HTTP
//     Basic or by client_id/client_secret in the form body.
//   - GET|POST /connect/authorize: authorization code flow, response_type=code
//     only, PKCE with S256 required (plain refused), automatic consent for the
//     test user [TestUser]; a scope parameter is required (as in Duende). With
//     [Options.Interactive] it shows a login page and a consent page (Allow or
//     Deny, which redirects with error=access_denied) instead.
//   - POST /connect/revocation: RFC 7009 for refresh and access tokens.
//   - GET /.well-known/openid-configuration and its jwks_uri
//     /.well-known/openid-configuration/jwks.
//   - GET /healthz.
//
// Access tokens are RS256 JWTs with the claims iss, sub, client_id,
// account_code, scope (one space-separated string), exp, iat, jti and aud (an
// empty array). Refresh tokens are opaque, issued only when offline_access is
// granted, rotated on every use; a used (or revoked) refresh token answers
// invalid_grant and, as fosite does, also revokes the refresh token that
// replaced it (the whole grant). Authorization codes are single use and live
// 5 minutes.
//
// Faults ([Fault]) can be queued for the token endpoint to test a client's
// retry and timeout behaviour. [Server.AdminHandler] exposes stats, faults
// and revocation over HTTP for out-of-process tests, and (a test aid for
// secret scanners) the secrets the server issued or received.
package devidp
