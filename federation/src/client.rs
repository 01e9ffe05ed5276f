//! The outbound federation client: [`FederationClient`] sends any ruma `OutgoingRequest` to
//! another server, signed with `X-Matrix`, over reqwest + rustls (ring).
//!
//! Each request: check the allow/deny lists ([`FederationConfig::is_server_allowed`]), resolve
//! the destination ([`crate::discovery`]), drop private addresses unless
//! `allow_private_networks` ([`is_private_ip`]), pin the surviving addresses for the TLS name
//! in the client's DNS resolver, then send to `https://<tls name>:<port>/...` with the spec's
//! `Host` header. The URL host is the name the certificate must be valid for, so rustls checks
//! the right name (and the IP SAN, without SNI, for IP literals). The well-known fetch uses a
//! second reqwest client whose resolver also refuses private addresses, as do its redirects.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{
    OwnedServerName, ServerName,
    api::{
        IncomingResponseExt, OutgoingBody, OutgoingRequest, error::IntoHttpError,
        path_builder::SinglePath,
    },
};

use crate::{
    ServerSigningKey,
    discovery::{
        DnsLookup, HickoryDns, ResolvedDestination, Resolver, WellKnown, WellKnownFetch,
        cache_control_max_age,
    },
    error::{BoxFuture, FederationError},
    request_auth,
};

/// Outbound federation settings (the server fills it from its config file).
#[derive(Debug, Clone)]
pub struct FederationConfig {
    /// A PEM bundle of extra trusted CAs (a company's private CA), on top of the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Servers we federate with; empty = any. Entries are server names (`example.org`,
    /// `example.org:8448`) or `*.example.org` (any subdomain); case-insensitive.
    pub allowed_servers: Vec<String>,
    /// Servers we never federate with (same syntax); wins over `allowed_servers`.
    pub denied_servers: Vec<String>,
    /// Allow connecting to private, loopback, link-local, unique-local and CGNAT addresses.
    pub allow_private_networks: bool,
    /// Whole-request timeout (connect, send, read the body).
    pub request_timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Largest response body read.
    pub max_response_bytes: usize,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            allowed_servers: Vec::new(),
            denied_servers: Vec::new(),
            allow_private_networks: false,
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: 100 * 1024 * 1024,
        }
    }
}

fn pattern_matches(pattern: &str, server: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    let server = server.to_ascii_lowercase();
    if let Some(suffix) = pattern.strip_prefix("*.") {
        // `*.example.org` matches `a.example.org` and `a.example.org:8448`.
        let host = server.rsplit_once(':').map_or(server.as_str(), |(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') {
                h
            } else {
                server.as_str()
            }
        });
        host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}"))
    } else {
        pattern == server
    }
}

impl FederationConfig {
    /// Whether federation with `server` is allowed by `allowed_servers` / `denied_servers`. Use it
    /// for inbound requests too.
    pub fn is_server_allowed(&self, server: &ServerName) -> bool {
        let name = server.as_str();
        if self.denied_servers.iter().any(|p| pattern_matches(p, name)) {
            return false;
        }
        self.allowed_servers.is_empty()
            || self
                .allowed_servers
                .iter()
                .any(|p| pattern_matches(p, name))
    }
}

/// True for addresses an outbound request must not reach unless `allow_private_networks`:
/// unspecified, loopback, private (RFC 1918), CGNAT (100.64/10), link-local, unique-local
/// (fc00::/7), site-local, multicast, broadcast, documentation and other reserved ranges, and
/// IPv4 addresses embedded in IPv6 (mapped, compatible, NAT64, 6to4) when the IPv4 one is.
pub fn is_private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_private_v4(v4);
    }
    // IPv4-compatible (deprecated) ::a.b.c.d
    if seg[..6].iter().all(|s| *s == 0) && !ip.is_loopback() && !ip.is_unspecified() {
        return is_private_v4(Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        ));
    }
    // NAT64 64:ff9b::/96
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6].iter().all(|s| *s == 0) {
        return is_private_v4(Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        ));
    }
    // 6to4 2002::/16 embeds an IPv4 address in segments 1-2.
    if seg[0] == 0x2002 {
        return is_private_v4(Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        ));
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site local (deprecated) fec0::/10
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x0100 && seg[1..4].iter().all(|s| *s == 0)) // discard 100::/64
}

/// Addresses discovery chose, by TLS name (lower case).
type Pins = Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>;

/// The reqwest DNS resolver of both clients: pinned addresses first (the federation client pins
/// the result of discovery under the TLS name before each request), else an A/AAAA lookup
/// without private addresses (unless allowed).
struct FilteringResolver {
    dns: Arc<dyn DnsLookup>,
    pins: Option<Pins>,
    allow_private: bool,
}

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let pinned = self
            .pins
            .as_ref()
            .and_then(|pins| pins.lock().ok()?.get(&host).cloned());
        let dns = self.dns.clone();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match pinned {
                Some(addrs) => addrs,
                None => dns
                    .ips(&host)
                    .await
                    .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect(),
            };
            let total = addrs.len();
            let addrs: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| allow_private || !is_private_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                let reason = if total > 0 {
                    format!("{host} resolves only to private addresses")
                } else {
                    format!("{host} has no address records")
                };
                return Err(reason.into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Reads a response body with a size limit.
async fn read_body(
    server: &str,
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, FederationError> {
    if response.content_length().is_some_and(|l| l > limit as u64) {
        return Err(FederationError::ResponseTooLarge {
            server: server.to_owned(),
            limit,
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| FederationError::Transport {
            server: server.to_owned(),
            source,
        })?
    {
        if body.len() + chunk.len() > limit {
            return Err(FederationError::ResponseTooLarge {
                server: server.to_owned(),
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Maps an error answer (status >= 400) to [`FederationError::Remote`].
pub fn remote_error(
    server: &str,
    status: http::StatusCode,
    headers: &http::HeaderMap,
    body: &[u8],
) -> FederationError {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let retry_after_ms = json
        .as_ref()
        .and_then(|j| j.get("retry_after_ms"))
        .and_then(|v| v.as_u64())
        .or_else(|| {
            headers
                .get(http::header::RETRY_AFTER)?
                .to_str()
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
                .map(|s| s.saturating_mul(1000))
        });
    FederationError::Remote {
        server: server.to_owned(),
        status,
        errcode: field("errcode"),
        error: field("error"),
        retry_after_ms,
        body: json,
    }
}

/// Fetches `/.well-known/matrix/server` over HTTPS (port 443), following up to 5 HTTPS
/// redirects, with private addresses refused unless allowed.
struct HttpWellKnown {
    http: reqwest::Client,
}

const WELL_KNOWN_MAX_BYTES: usize = 64 * 1024;

impl WellKnownFetch for HttpWellKnown {
    fn fetch<'a>(&'a self, hostname: &'a str) -> BoxFuture<'a, WellKnown> {
        Box::pin(async move {
            let url = format!("https://{hostname}/.well-known/matrix/server");
            let fail = |reason: String| WellKnown {
                result: Err(reason),
                max_age: None,
            };
            let response = match self.http.get(&url).send().await {
                Ok(r) => r,
                Err(e) => return fail(e.to_string()),
            };
            if response.status() != http::StatusCode::OK {
                return fail(format!("status {}", response.status()));
            }
            let max_age = response
                .headers()
                .get(http::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .and_then(cache_control_max_age);
            let body = match read_body(hostname, response, WELL_KNOWN_MAX_BYTES).await {
                Ok(b) => b,
                Err(e) => return fail(e.to_string()),
            };
            let server = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("m.server")?.as_str().map(str::to_owned));
            match server {
                Some(server) => WellKnown {
                    result: Ok(server),
                    max_age,
                },
                None => fail("no m.server string in the response".into()),
            }
        })
    }
}

/// The outbound federation client. Cheap to share (`Arc` it or hold it in the services).
pub struct FederationClient {
    origin: OwnedServerName,
    key: Arc<ServerSigningKey>,
    config: FederationConfig,
    http: reqwest::Client,
    /// For URLs outside federation (a media `Location`): redirects followed, private
    /// addresses refused unless allowed.
    plain_http: reqwest::Client,
    resolver: Arc<Resolver>,
    pins: Pins,
}

impl std::fmt::Debug for FederationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationClient")
            .field("origin", &self.origin)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

const USER_AGENT: &str = concat!("Ganglion/", env!("CARGO_PKG_VERSION"));

impl FederationClient {
    /// A client using the system DNS configuration. `origin` is our server name, `key` our
    /// signing key.
    pub fn new(
        origin: OwnedServerName,
        key: Arc<ServerSigningKey>,
        config: FederationConfig,
    ) -> Result<Self, FederationError> {
        let dns = HickoryDns::from_system_conf().map_err(|reason| FederationError::Discovery {
            server: "(resolver)".into(),
            reason,
        })?;
        Self::with_dns(origin, key, config, Arc::new(dns))
    }

    /// A client with a custom DNS implementation (tests, or a resolver the server shares).
    pub fn with_dns(
        origin: OwnedServerName,
        key: Arc<ServerSigningKey>,
        config: FederationConfig,
        dns: Arc<dyn DnsLookup>,
    ) -> Result<Self, FederationError> {
        let mut tls = crate::tls::client_config(config.ca_file.as_deref())?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let pins = Arc::new(Mutex::new(HashMap::new()));
        let build_err = |e: reqwest::Error| FederationError::Request(e.to_string());

        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .tls_backend_preconfigured(tls.clone())
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .dns_resolver(Arc::new(FilteringResolver {
                dns: dns.clone(),
                pins: Some(pins.clone()),
                allow_private: config.allow_private_networks,
            }))
            .build()
            .map_err(build_err)?;

        let allow_private = config.allow_private_networks;
        let redirects = move || {
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    return attempt.error("too many redirects");
                }
                if attempt.url().scheme() != "https" {
                    return attempt.error("redirect away from https");
                }
                let ip = match attempt.url().host() {
                    Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                    Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                    _ => None,
                };
                if let Some(ip) = ip
                    && !allow_private
                    && is_private_ip(ip)
                {
                    return attempt.error("redirect to a private address");
                }
                attempt.follow()
            })
        };
        let plain_builder = |timeout: Duration| {
            reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .tls_backend_preconfigured(tls.clone())
                .http1_only()
                .redirect(redirects())
                .timeout(timeout)
                .connect_timeout(config.connect_timeout)
                .dns_resolver(Arc::new(FilteringResolver {
                    dns: dns.clone(),
                    pins: None,
                    allow_private,
                }))
                .build()
                .map_err(build_err)
        };
        let well_known_http = plain_builder(Duration::from_secs(10).min(config.request_timeout))?;
        let plain_http = plain_builder(config.request_timeout)?;
        let resolver = Arc::new(Resolver::new(
            dns,
            Arc::new(HttpWellKnown {
                http: well_known_http,
            }),
        ));
        Ok(Self {
            origin,
            key,
            config,
            http,
            plain_http,
            resolver,
            pins,
        })
    }

    /// Our server name (the `origin` of signed requests).
    pub fn origin(&self) -> &ServerName {
        &self.origin
    }

    pub fn config(&self) -> &FederationConfig {
        &self.config
    }

    /// The discovery resolver (e.g. to [`Resolver::forget`] a cached well-known).
    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// Whether federation with `server` is allowed by the configured lists.
    pub fn is_server_allowed(&self, server: &ServerName) -> bool {
        self.config.is_server_allowed(server)
    }

    /// Resolves `destination` and removes the addresses the configuration forbids.
    pub async fn resolve(
        &self,
        destination: &ServerName,
    ) -> Result<ResolvedDestination, FederationError> {
        if !self.is_server_allowed(destination) {
            return Err(FederationError::DestinationDenied(destination.to_string()));
        }
        let mut resolved = self.resolver.resolve(destination).await.map_err(|reason| {
            FederationError::Discovery {
                server: destination.to_string(),
                reason,
            }
        })?;
        if !self.config.allow_private_networks {
            let first = resolved.addrs[0].ip();
            resolved.addrs.retain(|a| !is_private_ip(a.ip()));
            if resolved.addrs.is_empty() {
                return Err(FederationError::PrivateAddress {
                    server: destination.to_string(),
                    addr: first,
                });
            }
        }
        Ok(resolved)
    }

    /// Sends `request` to `destination` with `X-Matrix` authentication and parses the answer.
    /// Error answers become [`FederationError::Remote`] with the status and Matrix errcode.
    pub async fn send<T>(
        &self,
        destination: &ServerName,
        request: T,
    ) -> Result<T::IncomingResponse, FederationError>
    where
        T: OutgoingRequest<PathBuilder = SinglePath>,
    {
        self.send_inner(destination, request, true, self.config.max_response_bytes)
            .await
    }

    /// Sends `request` with `X-Matrix` authentication like [`FederationClient::send`] and
    /// returns the raw answer (status, headers, body of at most `max_response_bytes`) instead
    /// of parsing it: for answers ruma's types would hold or parse unsuitably (federation
    /// media, `multipart/mixed`). Error statuses (>= 400) become [`FederationError::Remote`].
    pub async fn send_raw<T>(
        &self,
        destination: &ServerName,
        request: T,
        max_response_bytes: usize,
    ) -> Result<(http::StatusCode, http::HeaderMap, Vec<u8>), FederationError>
    where
        T: OutgoingRequest<PathBuilder = SinglePath>,
    {
        let resolved = self.resolve(destination).await?;
        let http_request = self.build_request(&resolved, destination, request, true)?;
        let (status, headers, body) = self
            .execute(&resolved, http_request, max_response_bytes)
            .await?;
        if status.as_u16() >= 400 {
            return Err(remote_error(destination.as_str(), status, &headers, &body));
        }
        Ok((status, headers, body))
    }

    /// An unauthenticated `GET` of an HTTPS URL outside federation (a media `Location`),
    /// following redirects, private addresses refused unless allowed. Returns the headers and
    /// body of a 2xx answer, at most `max_response_bytes`.
    pub async fn get_url(
        &self,
        url: &str,
        max_response_bytes: usize,
    ) -> Result<(http::HeaderMap, Vec<u8>), FederationError> {
        let parsed =
            url::Url::parse(url).map_err(|e| FederationError::Request(format!("{url}: {e}")))?;
        if parsed.scheme() != "https" {
            return Err(FederationError::Request(format!("{url}: not https")));
        }
        let host = parsed.host_str().unwrap_or("").to_owned();
        let response = self.plain_http.get(parsed).send().await.map_err(|source| {
            FederationError::Transport {
                server: host.clone(),
                source,
            }
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_body(&host, response, max_response_bytes).await?;
        if status.as_u16() >= 400 || !status.is_success() {
            return Err(remote_error(&host, status, &headers, &body));
        }
        Ok((headers, body))
    }

    /// Like [`FederationClient::send`] without `X-Matrix` (key endpoints, `/version`).
    pub async fn send_unauthenticated<T>(
        &self,
        destination: &ServerName,
        request: T,
    ) -> Result<T::IncomingResponse, FederationError>
    where
        T: OutgoingRequest<PathBuilder = SinglePath>,
    {
        self.send_inner(destination, request, false, self.config.max_response_bytes)
            .await
    }

    /// An unauthenticated `GET <path_and_query>` (e.g. `/_matrix/key/v2/server`); returns the
    /// body of a 2xx answer.
    pub async fn get_unauthenticated(
        &self,
        destination: &ServerName,
        path_and_query: &str,
    ) -> Result<Vec<u8>, FederationError> {
        let resolved = self.resolve(destination).await?;
        let request = http::Request::builder()
            .method(http::Method::GET)
            .uri(format!("{}{}", resolved.base_url, path_and_query))
            .body(Vec::new())
            .map_err(|e| FederationError::Request(e.to_string()))?;
        let (status, headers, body) = self
            .execute(&resolved, request, self.config.max_response_bytes)
            .await?;
        if status.as_u16() >= 400 {
            return Err(remote_error(destination.as_str(), status, &headers, &body));
        }
        Ok(body)
    }

    async fn send_inner<T>(
        &self,
        destination: &ServerName,
        request: T,
        authenticated: bool,
        max_response_bytes: usize,
    ) -> Result<T::IncomingResponse, FederationError>
    where
        T: OutgoingRequest<PathBuilder = SinglePath>,
    {
        let resolved = self.resolve(destination).await?;
        let http_request = self.build_request(&resolved, destination, request, authenticated)?;
        let (status, headers, body) = self
            .execute(&resolved, http_request, max_response_bytes)
            .await?;
        if status.as_u16() >= 400 {
            return Err(remote_error(destination.as_str(), status, &headers, &body));
        }
        let mut response = http::Response::new(body.as_slice());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        T::IncomingResponse::try_from_http_response(response).map_err(|e| {
            FederationError::InvalidResponse {
                server: destination.to_string(),
                reason: e.to_string(),
            }
        })
    }

    fn build_request<T>(
        &self,
        resolved: &ResolvedDestination,
        destination: &ServerName,
        request: T,
        authenticated: bool,
    ) -> Result<http::Request<Vec<u8>>, FederationError>
    where
        T: OutgoingRequest<PathBuilder = SinglePath>,
    {
        let build_err = |e: IntoHttpError| FederationError::Request(e.to_string());
        let (mut parts, body) = request
            .try_into_http_request_inner(&resolved.base_url, ())
            .map_err(build_err)?
            .into_parts();
        if let Some(content_type) = body.content_type() {
            parts
                .headers
                .entry(http::header::CONTENT_TYPE)
                .or_insert(content_type);
        }
        let body: Vec<u8> = body.try_into_buf().map_err(|e| build_err(e.into()))?;
        let mut http_request = http::Request::from_parts(parts, body);
        if authenticated {
            request_auth::sign_request(&mut http_request, &self.origin, destination, &self.key)
                .map_err(|e| FederationError::Request(e.to_string()))?;
        }
        Ok(http_request)
    }

    async fn execute(
        &self,
        resolved: &ResolvedDestination,
        mut request: http::Request<Vec<u8>>,
        max_response_bytes: usize,
    ) -> Result<(http::StatusCode, http::HeaderMap, Vec<u8>), FederationError> {
        let server = resolved.server_name.as_str();
        if resolved.tls_name.parse::<IpAddr>().is_err()
            && let Ok(mut pins) = self.pins.lock()
        {
            pins.insert(
                resolved.tls_name.to_ascii_lowercase(),
                resolved.addrs.clone(),
            );
        }
        let host = http::HeaderValue::from_str(&resolved.host_header)
            .map_err(|e| FederationError::Request(format!("Host header: {e}")))?;
        request.headers_mut().insert(http::header::HOST, host);
        let request = reqwest::Request::try_from(request)
            .map_err(|e| FederationError::Request(e.to_string()))?;
        let response =
            self.http
                .execute(request)
                .await
                .map_err(|source| FederationError::Transport {
                    server: server.to_owned(),
                    source,
                })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_body(server, response, max_response_bytes).await?;
        Ok((status, headers, body))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{
        discovery::SrvRecord,
        request_auth::tests::{key_map, test_key},
        tls::tests::{test_pki, write_temp},
    };

    #[test]
    fn private_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:101::1",
            "ff02::1",
        ] {
            assert!(is_private_ip(ip.parse().unwrap()), "{ip} should be private");
        }
        for ip in [
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(!is_private_ip(ip.parse().unwrap()), "{ip} should be public");
        }
    }

    #[test]
    fn allow_and_deny_lists() {
        let sn = |s: &str| -> OwnedServerName { s.try_into().unwrap() };
        let mut config = FederationConfig::default();
        assert!(config.is_server_allowed(&sn("any.org")));
        config.denied_servers = vec!["evil.org".into(), "*.bad.org".into()];
        assert!(!config.is_server_allowed(&sn("evil.org")));
        assert!(!config.is_server_allowed(&sn("x.bad.org:8448")));
        assert!(config.is_server_allowed(&sn("bad.org")));
        config.allowed_servers = vec!["Corp.example".into(), "*.corp.example".into()];
        assert!(config.is_server_allowed(&sn("corp.example")));
        assert!(config.is_server_allowed(&sn("hq.corp.example")));
        assert!(!config.is_server_allowed(&sn("corp.example:8448")));
        assert!(!config.is_server_allowed(&sn("other.org")));
        assert!(!config.is_server_allowed(&sn("xcorp.example")));
    }

    #[test]
    fn error_bodies_keep_errcode_and_status() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        let e = remote_error(
            "x.org",
            http::StatusCode::TOO_MANY_REQUESTS,
            &headers,
            br#"{"errcode":"M_LIMIT_EXCEEDED","error":"slow down"}"#,
        );
        assert_eq!(e.status(), Some(http::StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(e.errcode(), Some("M_LIMIT_EXCEEDED"));
        let FederationError::Remote {
            retry_after_ms,
            error,
            ..
        } = &e
        else {
            panic!()
        };
        assert_eq!(*retry_after_ms, Some(3000));
        assert_eq!(error.as_deref(), Some("slow down"));
        let e = remote_error(
            "x.org",
            http::StatusCode::BAD_GATEWAY,
            &http::HeaderMap::new(),
            b"<html>",
        );
        assert_eq!(e.errcode(), None);
        assert_eq!(e.status(), Some(http::StatusCode::BAD_GATEWAY));
    }

    /// DNS that knows `localhost` only.
    struct LoopbackDns;
    impl DnsLookup for LoopbackDns {
        fn srv<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, String>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, String>> {
            let ips = if host == "localhost" {
                vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
            } else {
                Vec::new()
            };
            Box::pin(async move { Ok(ips) })
        }
    }

    /// A request as the test server saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        /// The SNI the client sent.
        sni: Option<String>,
    }

    /// A one-route HTTPS server on 127.0.0.1: answers every request with `status` and `body`
    /// and records what it received.
    async fn tls_server(
        names: &[&str],
        status: u16,
        body: &'static str,
    ) -> (u16, PathBuf, Arc<Mutex<Vec<Seen>>>, Arc<AtomicUsize>) {
        let (ca, chain, key) = test_pki(names);
        let tag = format!("{}-{}", names.join("_"), rand::random::<u32>());
        let ca_path = write_temp(&format!("ca-{tag}.pem"), &ca);
        let chain_path = write_temp(&format!("chain-{tag}.pem"), &chain);
        let key_path = write_temp(&format!("key-{tag}.pem"), &key);
        let mut config = crate::tls::server_config(&chain_path, &key_path).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (seen2, handshakes2) = (seen.clone(), handshakes.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let seen = seen2.clone();
                let handshakes = handshakes2.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    handshakes.fetch_add(1, Ordering::SeqCst);
                    let sni = tls.get_ref().1.server_name().map(str::to_owned);
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let Ok(n) = tls.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.split("\r\n");
                    let mut request_line = lines.next().unwrap_or("").split(' ');
                    let method = request_line.next().unwrap_or("").to_owned();
                    let target = request_line.next().unwrap_or("").to_owned();
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    let length = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut req_body = buf[head_end + 4..].to_vec();
                    while req_body.len() < length {
                        let Ok(n) = tls.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            break;
                        }
                        req_body.extend_from_slice(&chunk[..n]);
                    }
                    seen.lock().unwrap().push(Seen {
                        method,
                        target,
                        headers,
                        body: req_body,
                        sni,
                    });
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, ca_path, seen, handshakes)
    }

    fn client(ca_file: Option<PathBuf>, allow_private: bool) -> FederationClient {
        crate::tls::install_default_provider();
        let config = FederationConfig {
            ca_file,
            allow_private_networks: allow_private,
            request_timeout: Duration::from_secs(10),
            ..FederationConfig::default()
        };
        FederationClient::with_dns(
            "origin.test".try_into().unwrap(),
            Arc::new(test_key(7, "t1")),
            config,
            Arc::new(LoopbackDns),
        )
        .unwrap()
    }

    const VERSION_BODY: &str = r#"{"server":{"name":"Test","version":"1.0"}}"#;

    #[tokio::test]
    async fn ip_literal_over_private_ca() {
        use ruma::api::federation::discovery::get_server_version;
        let (port, ca, seen, _) = tls_server(&["127.0.0.1"], 200, VERSION_BODY).await;
        let dest: OwnedServerName = format!("127.0.0.1:{port}").try_into().unwrap();

        // Trusted through ca_file, private networks allowed.
        let c = client(Some(ca.clone()), true);
        let response = c
            .send(&dest, get_server_version::v1::Request::new())
            .await
            .expect("request succeeds");
        assert_eq!(response.server.unwrap().name.as_deref(), Some("Test"));
        let req = seen.lock().unwrap()[0].clone();
        assert_eq!(req.method, "GET");
        assert_eq!(req.target, "/_matrix/federation/v1/version");
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("host").as_deref(), Some(dest.as_str()));
        assert_eq!(req.sni, None, "no SNI for an IP literal");
        // The X-Matrix signature verifies on the receiving side.
        let mut inbound = http::Request::builder()
            .method(req.method.as_str())
            .uri(req.target.as_str());
        for (k, v) in &req.headers {
            inbound = inbound.header(k.as_str(), v.as_str());
        }
        let inbound = inbound.body(req.body.clone()).unwrap();
        let keys = key_map("origin.test", &test_key(7, "t1"));
        let origin = request_auth::verify_request(&inbound, &dest, &keys)
            .await
            .expect("signature verifies");
        assert_eq!(origin, "origin.test");

        // Unauthenticated GET carries no Authorization.
        let body = c
            .get_unauthenticated(&dest, "/_matrix/key/v2/server")
            .await
            .unwrap();
        assert_eq!(body, VERSION_BODY.as_bytes());
        assert!(
            !seen.lock().unwrap()[1]
                .headers
                .iter()
                .any(|(k, _)| k == "authorization")
        );

        // Without the CA: certificate not trusted.
        let c = client(None, true);
        let err = c
            .send(&dest, get_server_version::v1::Request::new())
            .await
            .unwrap_err();
        assert!(matches!(err, FederationError::Transport { .. }), "{err:?}");

        // Private networks not allowed: refused before connecting.
        let c = client(Some(ca), false);
        let err = c
            .send(&dest, get_server_version::v1::Request::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, FederationError::PrivateAddress { .. }),
            "{err:?}"
        );
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn hostname_with_port_uses_dns_and_checks_the_name() {
        use ruma::api::federation::discovery::get_server_version;
        let (port, ca, seen, _) = tls_server(&["localhost"], 200, VERSION_BODY).await;
        let dest: OwnedServerName = format!("localhost:{port}").try_into().unwrap();
        let c = client(Some(ca.clone()), true);
        c.send(&dest, get_server_version::v1::Request::new())
            .await
            .expect("request succeeds");
        let req = seen.lock().unwrap()[0].clone();
        assert!(
            req.headers
                .contains(&("host".into(), format!("localhost:{port}")))
        );
        assert_eq!(req.sni.as_deref(), Some("localhost"));

        // localhost resolves to 127.0.0.1: refused without allow_private_networks.
        let c = client(Some(ca.clone()), false);
        let err = c
            .send(&dest, get_server_version::v1::Request::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, FederationError::PrivateAddress { .. }),
            "{err:?}"
        );

        // A certificate for another name is rejected.
        let (port, ca, _, _) = tls_server(&["other.test"], 200, VERSION_BODY).await;
        let dest: OwnedServerName = format!("localhost:{port}").try_into().unwrap();
        let err = client(Some(ca), true)
            .send(&dest, get_server_version::v1::Request::new())
            .await
            .unwrap_err();
        assert!(matches!(err, FederationError::Transport { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn error_answers_and_lists() {
        use ruma::api::federation::discovery::get_server_version;
        let (port, ca, _, _) = tls_server(
            &["127.0.0.1"],
            403,
            r#"{"errcode":"M_FORBIDDEN","error":"no"}"#,
        )
        .await;
        let dest: OwnedServerName = format!("127.0.0.1:{port}").try_into().unwrap();
        let c = client(Some(ca.clone()), true);
        let err = c
            .send(&dest, get_server_version::v1::Request::new())
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(http::StatusCode::FORBIDDEN));
        assert_eq!(err.errcode(), Some("M_FORBIDDEN"));

        let mut config = c.config().clone();
        config.denied_servers = vec![dest.to_string()];
        let denied = FederationClient::with_dns(
            "origin.test".try_into().unwrap(),
            Arc::new(test_key(7, "t1")),
            config,
            Arc::new(LoopbackDns),
        )
        .unwrap();
        let err = denied
            .send(&dest, get_server_version::v1::Request::new())
            .await
            .unwrap_err();
        assert!(matches!(err, FederationError::DestinationDenied(_)));
    }
}
