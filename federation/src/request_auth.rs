//! `X-Matrix` request authentication (server-server spec, "Request Authentication").
//!
//! Outbound: [`sign_request`] signs the canonical JSON
//! `{method, uri, origin, destination, content?}` with our key and sets the `Authorization`
//! header. Inbound: [`verify_request`] parses the `Authorization` header(s), checks that
//! `destination` (when present) is us, looks the origin's key up through a [`KeySource`] and
//! verifies the signature; it returns the authenticated origin.

use std::collections::BTreeMap;

use ruma::{
    OwnedServerName, ServerName, ServerSigningKeyId,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
    serde::Base64,
};

use crate::{
    ServerSigningKey,
    error::{BoxFuture, RequestAuthError},
};

/// Where inbound verification finds the origin's public keys. [`crate::keyring::Keyring`]
/// implements it (fetching keys when they are missing); tests use a map.
pub trait KeySource: Send + Sync {
    /// The public key `key_id` of `server`, valid now; `Ok(None)` when the server has no such
    /// (currently valid) key, `Err` when the keys could not be obtained.
    fn verify_key<'a>(
        &'a self,
        server: &'a ServerName,
        key_id: &'a ServerSigningKeyId,
    ) -> BoxFuture<'a, Result<Option<Base64>, String>>;
}

/// A fixed key map: `server name -> key id -> public key`.
impl KeySource for BTreeMap<String, BTreeMap<String, Base64>> {
    fn verify_key<'a>(
        &'a self,
        server: &'a ServerName,
        key_id: &'a ServerSigningKeyId,
    ) -> BoxFuture<'a, Result<Option<Base64>, String>> {
        let key = self
            .get(server.as_str())
            .and_then(|keys| keys.get(key_id.as_str()))
            .cloned();
        Box::pin(async move { Ok(key) })
    }
}

/// Signs `request` as `origin` for `destination` and sets its `Authorization` header. The
/// request URI may be absolute (`https://host/path?q`) or origin-form; only path and query are
/// signed. A non-empty body must be JSON.
pub fn sign_request<B: AsRef<[u8]>>(
    request: &mut http::Request<B>,
    origin: &ServerName,
    destination: &ServerName,
    key: &ServerSigningKey,
) -> Result<(), RequestAuthError> {
    if request.uri().path_and_query().is_none() {
        return Err(RequestAuthError::InvalidHeader(
            "request URI has no path".into(),
        ));
    }
    let input = XMatrixSigningInput::new(origin.to_owned(), destination.to_owned(), key.key_pair());
    let xmatrix = XMatrix::sign_http_request(request, input)
        .map_err(|e| RequestAuthError::BadBody(e.to_string()))?;
    request.headers_mut().insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from(&xmatrix),
    );
    Ok(())
}

/// Parses every `X-Matrix` credential of the request's `Authorization` headers (a server may
/// send one header per signing key). All must name the same origin.
pub fn parse_authorization(headers: &http::HeaderMap) -> Result<Vec<XMatrix>, RequestAuthError> {
    let mut credentials = Vec::new();
    let mut last_error = None;
    for value in headers.get_all(http::header::AUTHORIZATION) {
        match XMatrix::try_from(value) {
            Ok(x) => credentials.push(x),
            Err(e) => last_error = Some(e.to_string()),
        }
    }
    if credentials.is_empty() {
        return Err(match last_error {
            Some(e) => RequestAuthError::InvalidHeader(e),
            None => RequestAuthError::MissingAuthorization,
        });
    }
    if credentials
        .iter()
        .any(|x| x.origin != credentials[0].origin)
    {
        return Err(RequestAuthError::OriginMismatch);
    }
    Ok(credentials)
}

/// Verifies an inbound request signed with `X-Matrix` and returns the origin. `our_name` is this
/// server's name; the body is the raw request body (empty for GET). Succeeds when at least one
/// credential's signature verifies with a currently valid key of the origin.
pub async fn verify_request<B: AsRef<[u8]>>(
    request: &http::Request<B>,
    our_name: &ServerName,
    keys: &dyn KeySource,
) -> Result<OwnedServerName, RequestAuthError> {
    if request.uri().path_and_query().is_none() {
        return Err(RequestAuthError::InvalidHeader(
            "request URI has no path".into(),
        ));
    }
    let credentials = parse_authorization(request.headers())?;
    let origin = credentials[0].origin.clone();
    let mut last_error = None;
    for credential in &credentials {
        if let Some(destination) = &credential.destination
            && destination != our_name
        {
            return Err(RequestAuthError::DestinationMismatch(
                destination.to_string(),
            ));
        }
        let key = match keys.verify_key(&origin, &credential.key).await {
            Ok(Some(key)) => key,
            Ok(None) => {
                last_error = Some(RequestAuthError::UnknownKey {
                    origin: origin.to_string(),
                    key_id: credential.key.to_string(),
                });
                continue;
            }
            Err(reason) => {
                last_error = Some(RequestAuthError::KeyUnavailable {
                    origin: origin.to_string(),
                    reason,
                });
                continue;
            }
        };
        let key_map = BTreeMap::from([(
            origin.to_string(),
            BTreeMap::from([(credential.key.to_string(), key)]),
        )]);
        match credential.verify_http_request(request, our_name, &key_map) {
            Ok(()) => return Ok(origin),
            Err(e) => {
                last_error = Some(RequestAuthError::BadSignature {
                    origin: origin.to_string(),
                    reason: e.to_string(),
                })
            }
        }
    }
    Err(last_error.unwrap_or(RequestAuthError::MissingAuthorization))
}

#[cfg(test)]
pub(crate) mod tests {
    use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};

    use super::*;

    pub(crate) fn test_key(seed_byte: u8, version: &str) -> ServerSigningKey {
        let seed = STANDARD_NO_PAD.encode([seed_byte; 32]);
        ServerSigningKey::parse(&format!("ed25519 {version} {seed}")).expect("test key")
    }

    pub(crate) fn key_map(
        server: &str,
        key: &ServerSigningKey,
    ) -> BTreeMap<String, BTreeMap<String, Base64>> {
        let public = Base64::parse(key.public_key_base64()).expect("b64");
        BTreeMap::from([(
            server.to_owned(),
            BTreeMap::from([(key.key_id.clone(), public)]),
        )])
    }

    fn sn(s: &str) -> OwnedServerName {
        s.try_into().unwrap()
    }

    fn request(method: &str, uri: &str, body: &str) -> http::Request<Vec<u8>> {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(body.as_bytes().to_vec())
            .unwrap()
    }

    /// Moves the signed request's Authorization header onto another request.
    fn with_auth_of(
        signed: &http::Request<Vec<u8>>,
        mut other: http::Request<Vec<u8>>,
    ) -> http::Request<Vec<u8>> {
        for v in signed.headers().get_all(http::header::AUTHORIZATION) {
            other
                .headers_mut()
                .append(http::header::AUTHORIZATION, v.clone());
        }
        other
    }

    #[tokio::test]
    async fn sign_then_verify_round_trip() {
        let key = test_key(1, "a1");
        let keys = key_map("origin.org", &key);
        let mut req = request(
            "PUT",
            "https://dest.org:8448/_matrix/federation/v1/send/1?x=%20y",
            r#"{"pdus":[],"edus":[]}"#,
        );
        sign_request(&mut req, &sn("origin.org"), &sn("dest.org"), &key).unwrap();
        let header = req.headers()[http::header::AUTHORIZATION].to_str().unwrap();
        assert!(header.starts_with("X-Matrix "));
        assert!(header.contains("destination=dest.org"));
        // The receiver sees the origin-form URI.
        let inbound = with_auth_of(
            &req,
            request(
                "PUT",
                "/_matrix/federation/v1/send/1?x=%20y",
                r#"{ "edus": [], "pdus": [] }"#,
            ),
        );
        let origin = verify_request(&inbound, &sn("dest.org"), &keys)
            .await
            .unwrap();
        assert_eq!(origin, "origin.org");

        // GET without body.
        let mut get = request("GET", "/_matrix/federation/v1/version", "");
        sign_request(&mut get, &sn("origin.org"), &sn("dest.org"), &key).unwrap();
        verify_request(&get, &sn("dest.org"), &keys).await.unwrap();
    }

    #[tokio::test]
    async fn tampering_is_rejected() {
        let key = test_key(2, "k");
        let keys = key_map("origin.org", &key);
        let mut req = request("POST", "/_matrix/federation/v1/x", r#"{"a":1}"#);
        sign_request(&mut req, &sn("origin.org"), &sn("dest.org"), &key).unwrap();

        let wrong_body = with_auth_of(
            &req,
            request("POST", "/_matrix/federation/v1/x", r#"{"a":2}"#),
        );
        assert!(matches!(
            verify_request(&wrong_body, &sn("dest.org"), &keys).await,
            Err(RequestAuthError::BadSignature { .. })
        ));
        let wrong_uri = with_auth_of(
            &req,
            request("POST", "/_matrix/federation/v1/y", r#"{"a":1}"#),
        );
        assert!(matches!(
            verify_request(&wrong_uri, &sn("dest.org"), &keys).await,
            Err(RequestAuthError::BadSignature { .. })
        ));
        let wrong_method = with_auth_of(
            &req,
            request("PUT", "/_matrix/federation/v1/x", r#"{"a":1}"#),
        );
        assert!(
            verify_request(&wrong_method, &sn("dest.org"), &keys)
                .await
                .is_err()
        );
        assert!(matches!(
            verify_request(&req, &sn("other.org"), &keys).await,
            Err(RequestAuthError::DestinationMismatch(_))
        ));
        // A different key under the same id.
        let other = test_key(3, "k");
        assert!(matches!(
            verify_request(&req, &sn("dest.org"), &key_map("origin.org", &other)).await,
            Err(RequestAuthError::BadSignature { .. })
        ));
        // Unknown key id / unknown origin.
        assert!(matches!(
            verify_request(
                &req,
                &sn("dest.org"),
                &key_map("origin.org", &test_key(2, "other"))
            )
            .await,
            Err(RequestAuthError::UnknownKey { .. })
        ));
        assert!(matches!(
            verify_request(&req, &sn("dest.org"), &key_map("elsewhere.org", &key)).await,
            Err(RequestAuthError::UnknownKey { .. })
        ));
        // Not JSON body.
        let not_json = with_auth_of(&req, request("POST", "/_matrix/federation/v1/x", "nope"));
        assert!(
            verify_request(&not_json, &sn("dest.org"), &keys)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn header_parsing() {
        let keys = BTreeMap::new();
        let missing = request("GET", "/x", "");
        assert!(matches!(
            verify_request(&missing, &sn("d.org"), &keys).await,
            Err(RequestAuthError::MissingAuthorization)
        ));
        let mut bearer = request("GET", "/x", "");
        bearer
            .headers_mut()
            .insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(matches!(
            verify_request(&bearer, &sn("d.org"), &keys).await,
            Err(RequestAuthError::InvalidHeader(_))
        ));
        // Pre-1.3 header without destination parses.
        let mut old = http::HeaderMap::new();
        old.insert(
            http::header::AUTHORIZATION,
            r#"X-Matrix origin=a.org,key="ed25519:1",sig="dGVzdA""#
                .parse()
                .unwrap(),
        );
        let parsed = parse_authorization(&old).unwrap();
        assert_eq!(parsed[0].origin, "a.org");
        assert!(parsed[0].destination.is_none());
        // Two headers with different origins.
        old.append(
            http::header::AUTHORIZATION,
            r#"X-Matrix origin=b.org,key="ed25519:1",sig="dGVzdA""#
                .parse()
                .unwrap(),
        );
        assert!(matches!(
            parse_authorization(&old),
            Err(RequestAuthError::OriginMismatch)
        ));
    }

    #[tokio::test]
    async fn one_valid_credential_of_several_suffices() {
        let current = test_key(4, "new");
        let mut req = request("GET", "/_matrix/federation/v1/version", "");
        sign_request(&mut req, &sn("origin.org"), &sn("dest.org"), &current).unwrap();
        // Prepend a credential by a key the receiver does not know.
        let mut stale = request("GET", "/_matrix/federation/v1/version", "");
        sign_request(
            &mut stale,
            &sn("origin.org"),
            &sn("dest.org"),
            &test_key(5, "old"),
        )
        .unwrap();
        let mut both = with_auth_of(&stale, request("GET", "/_matrix/federation/v1/version", ""));
        both.headers_mut().append(
            http::header::AUTHORIZATION,
            req.headers()[http::header::AUTHORIZATION].clone(),
        );
        let origin = verify_request(&both, &sn("dest.org"), &key_map("origin.org", &current))
            .await
            .unwrap();
        assert_eq!(origin, "origin.org");
    }
}
