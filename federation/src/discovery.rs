//! Server-name resolution, as the server-server spec's "Resolving server names" section says:
//!
//! 1. IP literal (with or without port; default 8448): connect there, `Host` = the server name,
//!    certificate for the IP.
//! 2. Hostname with an explicit port: A/AAAA of the hostname, `Host` = the server name (with
//!    port), certificate for the hostname.
//! 3. `GET https://<hostname>/.well-known/matrix/server` (cached: Cache-Control, default 24 h,
//!    at most 48 h, at least 5 min; errors cached for 1 h). If it names `<delegated>[:port]`:
//!    3.1 an IP literal: connect there (port or 8448), `Host` = the delegated name;
//!    3.2 a hostname with a port: A/AAAA, `Host` = `delegated:port`, certificate for delegated;
//!    3.3 SRV `_matrix-fed._tcp.<delegated>`, 3.4 (deprecated) `_matrix._tcp.<delegated>`,
//!    3.5 the delegated name on 8448; for 3.3–3.5 `Host` = delegated, certificate for delegated.
//! 4. SRV `_matrix-fed._tcp.<hostname>`, 5. (deprecated) `_matrix._tcp.<hostname>`,
//! 6. the hostname on 8448; `Host` and certificate = the hostname.
//!
//! DNS and the well-known fetch are injected ([`DnsLookup`], [`WellKnownFetch`]) so the ordering
//! logic is tested without network. SRV lookups happen only for names that need them (never for
//! IP literals or explicit ports).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{OwnedServerName, ServerName};

use crate::error::BoxFuture;

pub const DEFAULT_FEDERATION_PORT: u16 = 8448;
/// Well-known cache lifetime when the response has no usable Cache-Control.
pub const WELL_KNOWN_DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Upper bound on the well-known cache lifetime.
pub const WELL_KNOWN_MAX_TTL: Duration = Duration::from_secs(48 * 3600);
/// Lower bound on the well-known cache lifetime (a `max-age=0` answer is not refetched for every
/// request).
pub const WELL_KNOWN_MIN_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a failed or invalid well-known answer is cached.
pub const WELL_KNOWN_ERROR_TTL: Duration = Duration::from_secs(3600);

/// The host part of a server name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    /// The host as it appears in a URL or `Host` header (IPv6 in brackets).
    pub fn to_url_host(&self) -> String {
        match self {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            Host::Ip(ip) => ip.to_string(),
            Host::Name(name) => name.clone(),
        }
    }

    /// The name a TLS certificate must be valid for (IPv6 without brackets).
    pub fn tls_name(&self) -> String {
        match self {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(name) => name.clone(),
        }
    }
}

/// Splits `host[:port]` (IPv6 literals in brackets). `None` when it is not a valid server name.
pub fn split_host_port(s: &str) -> Option<(Host, Option<u16>)> {
    let name = <&ServerName>::try_from(s).ok()?;
    let host = name.host();
    let port = match &s[host.len()..] {
        "" => None,
        rest => Some(rest.strip_prefix(':')?.parse::<u16>().ok()?),
    };
    let host = if let Some(v6) = host.strip_prefix('[') {
        Host::Ip(IpAddr::V6(v6.strip_suffix(']')?.parse().ok()?))
    } else if let Ok(ip) = host.parse::<IpAddr>() {
        Host::Ip(ip)
    } else {
        Host::Name(host.to_ascii_lowercase())
    };
    Some((host, port))
}

/// Which step of the spec's algorithm produced the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolutionStep {
    /// 1: IP literal.
    IpLiteral,
    /// 2: hostname with explicit port.
    ExplicitPort,
    /// 3.1: well-known delegated to an IP literal.
    WellKnownIp,
    /// 3.2: well-known delegated to a hostname with a port.
    WellKnownExplicitPort,
    /// 3.3: well-known, then `_matrix-fed._tcp` SRV of the delegated name.
    WellKnownSrv,
    /// 3.4: well-known, then the deprecated `_matrix._tcp` SRV of the delegated name.
    WellKnownLegacySrv,
    /// 3.5: well-known, then the delegated name on 8448.
    WellKnownDefaultPort,
    /// 4: `_matrix-fed._tcp` SRV of the server name.
    Srv,
    /// 5: deprecated `_matrix._tcp` SRV of the server name.
    LegacySrv,
    /// 6: the server name on 8448.
    DefaultPort,
}

impl ResolutionStep {
    pub fn is_srv(self) -> bool {
        matches!(
            self,
            Self::WellKnownSrv | Self::WellKnownLegacySrv | Self::Srv | Self::LegacySrv
        )
    }
}

/// The outcome of the algorithm before address lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Hosts to connect to with their ports, in preference order (several only for SRV).
    pub candidates: Vec<(Host, u16)>,
    /// The `Host` header value.
    pub host_header: String,
    /// The name the server's certificate must be valid for; also the SNI unless it is an IP.
    pub tls_host: Host,
    pub step: ResolutionStep,
}

/// A destination ready to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDestination {
    pub server_name: OwnedServerName,
    /// Addresses to try, in order (each with its port).
    pub addrs: Vec<SocketAddr>,
    /// The `Host` header value.
    pub host_header: String,
    /// The name the certificate must be valid for (IPv6 without brackets); sent as SNI unless
    /// it is an IP address.
    pub tls_name: String,
    pub step: ResolutionStep,
    /// `https://<tls name>[:port]`: the URL base the client uses (the URL host is the TLS name;
    /// the port is omitted only when SRV targets use different ports, the addresses carry them).
    pub base_url: String,
}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Target host without the trailing dot.
    pub target: String,
}

/// DNS lookups used by discovery.
pub trait DnsLookup: Send + Sync {
    /// SRV records of `name` (e.g. `_matrix-fed._tcp.example.org`); `Ok(vec![])` when there are
    /// none.
    fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, String>>;
    /// A and AAAA records of `host` (CNAMEs followed).
    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, String>>;
}

/// The answer to a `/.well-known/matrix/server` fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WellKnown {
    /// The `m.server` string, or why there is none (non-200, not JSON, network error...).
    pub result: Result<String, String>,
    /// The Cache-Control lifetime of a successful answer, if the response gave one.
    pub max_age: Option<Duration>,
}

/// Fetches `https://<hostname>/.well-known/matrix/server`.
pub trait WellKnownFetch: Send + Sync {
    fn fetch<'a>(&'a self, hostname: &'a str) -> BoxFuture<'a, WellKnown>;
}

/// The system resolver (`/etc/resolv.conf`) through hickory.
pub struct HickoryDns {
    resolver: hickory_resolver::TokioResolver,
}

impl HickoryDns {
    pub fn from_system_conf() -> Result<Self, String> {
        let resolver = hickory_resolver::TokioResolver::builder_tokio()
            .map_err(|e| format!("reading the system DNS configuration: {e}"))?
            .build()
            .map_err(|e| format!("building the DNS resolver: {e}"))?;
        Ok(Self { resolver })
    }
}

impl DnsLookup for HickoryDns {
    fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, String>> {
        Box::pin(async move {
            match self.resolver.srv_lookup(name).await {
                Ok(lookup) => Ok(lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        hickory_resolver::proto::rr::RData::SRV(srv) => Some(SrvRecord {
                            priority: srv.priority,
                            weight: srv.weight,
                            port: srv.port,
                            target: srv.target.to_utf8().trim_end_matches('.').to_owned(),
                        }),
                        _ => None,
                    })
                    .collect()),
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, String>> {
        Box::pin(async move {
            match self.resolver.lookup_ip(host).await {
                Ok(lookup) => Ok(lookup.iter().collect()),
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// Parses a Cache-Control header value into a lifetime (`no-store`/`no-cache` give zero).
pub fn cache_control_max_age(value: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in value.split(',') {
        let directive = directive.trim().to_ascii_lowercase();
        if directive == "no-store" || directive == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(secs) = directive.strip_prefix("max-age=") {
            max_age = secs
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    max_age
}

/// How long a well-known answer is cached.
pub fn well_known_ttl(answer: &WellKnown, delegated_valid: bool) -> Duration {
    if answer.result.is_err() || !delegated_valid {
        return WELL_KNOWN_ERROR_TTL;
    }
    answer
        .max_age
        .unwrap_or(WELL_KNOWN_DEFAULT_TTL)
        .clamp(WELL_KNOWN_MIN_TTL, WELL_KNOWN_MAX_TTL)
}

/// Orders SRV records by priority, then by weight (heavier first: a deterministic stand-in for
/// RFC 2782's weighted choice); drops the "service not available" target `.`.
pub fn order_srv(mut records: Vec<SrvRecord>) -> Vec<SrvRecord> {
    for r in &mut records {
        r.target = r.target.trim_end_matches('.').to_owned();
    }
    records.retain(|r| !r.target.is_empty());
    records.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
    records
}

struct CachedWellKnown {
    delegated: Option<String>,
    expires: Instant,
}

/// The resolution algorithm with its well-known cache.
pub struct Resolver {
    dns: Arc<dyn DnsLookup>,
    well_known: Arc<dyn WellKnownFetch>,
    cache: Mutex<HashMap<String, CachedWellKnown>>,
}

const MAX_CACHE_ENTRIES: usize = 50_000;

impl Resolver {
    pub fn new(dns: Arc<dyn DnsLookup>, well_known: Arc<dyn WellKnownFetch>) -> Self {
        Self {
            dns,
            well_known,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn dns(&self) -> &Arc<dyn DnsLookup> {
        &self.dns
    }

    /// Forgets the cached well-known answer of `hostname` (e.g. after repeated failures).
    pub fn forget(&self, hostname: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&hostname.to_ascii_lowercase());
        }
    }

    /// The delegated server name from `/.well-known/matrix/server`, cached.
    async fn delegated(&self, hostname: &str) -> Option<String> {
        let now = Instant::now();
        if let Ok(cache) = self.cache.lock()
            && let Some(entry) = cache.get(hostname)
            && entry.expires > now
        {
            return entry.delegated.clone();
        }
        let answer = self.well_known.fetch(hostname).await;
        let delegated = match &answer.result {
            Ok(s) if split_host_port(s).is_some() => Some(s.clone()),
            Ok(s) => {
                tracing::debug!(hostname, value = %s, "invalid m.server in well-known");
                None
            }
            Err(e) => {
                tracing::debug!(hostname, error = %e, "no usable well-known");
                None
            }
        };
        let ttl = well_known_ttl(&answer, delegated.is_some());
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHE_ENTRIES {
                cache.retain(|_, e| e.expires > now);
                if cache.len() >= MAX_CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(
                hostname.to_owned(),
                CachedWellKnown {
                    delegated: delegated.clone(),
                    expires: now + ttl,
                },
            );
        }
        delegated
    }

    /// SRV `_matrix-fed._tcp` then `_matrix._tcp` of `host`; `None` when neither has records.
    async fn srv_candidates(&self, host: &str) -> Option<(Vec<(Host, u16)>, bool)> {
        for (prefix, legacy) in [("_matrix-fed._tcp", false), ("_matrix._tcp", true)] {
            let name = format!("{prefix}.{host}");
            match self.dns.srv(&name).await {
                Ok(records) => {
                    let records = order_srv(records);
                    if !records.is_empty() {
                        let candidates = records
                            .into_iter()
                            .map(|r| {
                                let host = match r.target.parse::<IpAddr>() {
                                    Ok(ip) => Host::Ip(ip),
                                    Err(_) => Host::Name(r.target.to_ascii_lowercase()),
                                };
                                (host, r.port)
                            })
                            .collect();
                        return Some((candidates, legacy));
                    }
                }
                Err(e) => tracing::debug!(name, error = %e, "SRV lookup failed"),
            }
        }
        None
    }

    /// Steps 1–6 without the final address lookup.
    pub async fn target(&self, server_name: &ServerName) -> Result<Target, String> {
        let (host, port) =
            split_host_port(server_name.as_str()).ok_or("not a valid server name")?;
        let name = server_name.as_str().to_owned();
        // 1. IP literal.
        if let Host::Ip(_) = host {
            return Ok(Target {
                candidates: vec![(host.clone(), port.unwrap_or(DEFAULT_FEDERATION_PORT))],
                host_header: name,
                tls_host: host,
                step: ResolutionStep::IpLiteral,
            });
        }
        // 2. Explicit port.
        if let Some(port) = port {
            return Ok(Target {
                candidates: vec![(host.clone(), port)],
                host_header: name,
                tls_host: host,
                step: ResolutionStep::ExplicitPort,
            });
        }
        let Host::Name(hostname) = &host else {
            return Err("unreachable".into());
        };
        // 3. Well-known.
        if let Some(delegated) = self.delegated(hostname).await
            && let Some((d_host, d_port)) = split_host_port(&delegated)
        {
            if let Host::Ip(_) = d_host {
                return Ok(Target {
                    candidates: vec![(d_host.clone(), d_port.unwrap_or(DEFAULT_FEDERATION_PORT))],
                    host_header: delegated,
                    tls_host: d_host,
                    step: ResolutionStep::WellKnownIp,
                });
            }
            if let Some(d_port) = d_port {
                return Ok(Target {
                    candidates: vec![(d_host.clone(), d_port)],
                    host_header: delegated,
                    tls_host: d_host,
                    step: ResolutionStep::WellKnownExplicitPort,
                });
            }
            let d_name = d_host.tls_name();
            if let Some((candidates, legacy)) = self.srv_candidates(&d_name).await {
                return Ok(Target {
                    candidates,
                    host_header: d_name,
                    tls_host: d_host,
                    step: if legacy {
                        ResolutionStep::WellKnownLegacySrv
                    } else {
                        ResolutionStep::WellKnownSrv
                    },
                });
            }
            return Ok(Target {
                candidates: vec![(d_host.clone(), DEFAULT_FEDERATION_PORT)],
                host_header: d_name,
                tls_host: d_host,
                step: ResolutionStep::WellKnownDefaultPort,
            });
        }
        // 4./5. SRV of the server name.
        if let Some((candidates, legacy)) = self.srv_candidates(hostname).await {
            return Ok(Target {
                candidates,
                host_header: hostname.clone(),
                tls_host: host,
                step: if legacy {
                    ResolutionStep::LegacySrv
                } else {
                    ResolutionStep::Srv
                },
            });
        }
        // 6. Port 8448.
        Ok(Target {
            candidates: vec![(host.clone(), DEFAULT_FEDERATION_PORT)],
            host_header: hostname.clone(),
            tls_host: host,
            step: ResolutionStep::DefaultPort,
        })
    }

    /// The full algorithm: [`Resolver::target`] then A/AAAA of every candidate host.
    pub async fn resolve(&self, server_name: &ServerName) -> Result<ResolvedDestination, String> {
        let target = self.target(server_name).await?;
        let mut addrs = Vec::new();
        let mut last_error = None;
        for (host, port) in &target.candidates {
            match host {
                Host::Ip(ip) => addrs.push(SocketAddr::new(*ip, *port)),
                Host::Name(name) => match self.dns.ips(name).await {
                    Ok(ips) => addrs.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, *port))),
                    Err(e) => last_error = Some(format!("{name}: {e}")),
                },
            }
        }
        if addrs.is_empty() {
            return Err(last_error.unwrap_or_else(|| "no address records".to_owned()));
        }
        let url_host = target.tls_host.to_url_host();
        let first_port = target.candidates[0].1;
        let base_url = if target.candidates.iter().all(|(_, p)| *p == first_port) {
            format!("https://{url_host}:{first_port}")
        } else {
            format!("https://{url_host}")
        };
        Ok(ResolvedDestination {
            server_name: server_name.to_owned(),
            addrs,
            host_header: target.host_header,
            tls_name: target.tls_host.tls_name(),
            step: target.step,
            base_url,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Fake DNS and well-known: fixed answers, counts the lookups.
    #[derive(Default)]
    pub(crate) struct FakeNet {
        pub srv: HashMap<String, Vec<SrvRecord>>,
        pub ips: HashMap<String, Vec<IpAddr>>,
        pub well_known: HashMap<String, WellKnown>,
        pub srv_queries: Mutex<Vec<String>>,
        pub well_known_fetches: AtomicUsize,
    }

    impl DnsLookup for FakeNet {
        fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, String>> {
            self.srv_queries.lock().unwrap().push(name.to_owned());
            let answer = self.srv.get(name).cloned().unwrap_or_default();
            Box::pin(async move { Ok(answer) })
        }
        fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, String>> {
            let answer = self.ips.get(host).cloned().unwrap_or_default();
            Box::pin(async move { Ok(answer) })
        }
    }

    impl WellKnownFetch for FakeNet {
        fn fetch<'a>(&'a self, hostname: &'a str) -> BoxFuture<'a, WellKnown> {
            self.well_known_fetches.fetch_add(1, Ordering::SeqCst);
            let answer = self.well_known.get(hostname).cloned().unwrap_or(WellKnown {
                result: Err("404".into()),
                max_age: None,
            });
            Box::pin(async move { answer })
        }
    }

    fn resolver(net: FakeNet) -> (Resolver, Arc<FakeNet>) {
        let net = Arc::new(net);
        (Resolver::new(net.clone(), net.clone()), net)
    }

    fn sn(s: &str) -> OwnedServerName {
        s.try_into().unwrap()
    }

    fn wk(s: &str) -> WellKnown {
        WellKnown {
            result: Ok(s.to_owned()),
            max_age: None,
        }
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.to_owned(),
        }
    }

    #[test]
    fn splits_server_names() {
        assert_eq!(
            split_host_port("1.2.3.4"),
            Some((Host::Ip("1.2.3.4".parse().unwrap()), None))
        );
        assert_eq!(
            split_host_port("[::1]:8000"),
            Some((Host::Ip("::1".parse().unwrap()), Some(8000)))
        );
        assert_eq!(
            split_host_port("Example.ORG:443"),
            Some((Host::Name("example.org".into()), Some(443)))
        );
        assert_eq!(split_host_port("example.org:99999"), None);
        assert_eq!(split_host_port("exa mple.org"), None);
        assert_eq!(split_host_port(""), None);
    }

    #[tokio::test]
    async fn ip_literals_and_explicit_ports_skip_dns() {
        let (r, net) = resolver(FakeNet::default());
        let d = r.resolve(&sn("1.2.3.4")).await.unwrap();
        assert_eq!(d.addrs, vec!["1.2.3.4:8448".parse().unwrap()]);
        assert_eq!(d.host_header, "1.2.3.4");
        assert_eq!(d.tls_name, "1.2.3.4");
        assert_eq!(d.step, ResolutionStep::IpLiteral);

        let d = r.resolve(&sn("[2001:db8::1]:8000")).await.unwrap();
        assert_eq!(d.addrs, vec!["[2001:db8::1]:8000".parse().unwrap()]);
        assert_eq!(d.host_header, "[2001:db8::1]:8000");
        assert_eq!(d.tls_name, "2001:db8::1");
        assert_eq!(d.base_url, "https://[2001:db8::1]:8000");

        let t = r.target(&sn("example.org:1234")).await.unwrap();
        assert_eq!(t.step, ResolutionStep::ExplicitPort);
        assert_eq!(t.host_header, "example.org:1234");
        assert_eq!(t.candidates, vec![(Host::Name("example.org".into()), 1234)]);
        assert!(net.srv_queries.lock().unwrap().is_empty());
        assert_eq!(net.well_known_fetches.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn well_known_delegation_variants() {
        let mut net = FakeNet::default();
        net.well_known.insert("a.org".into(), wk("10.0.0.1"));
        net.well_known.insert("b.org".into(), wk("fed.b.org:8443"));
        net.well_known.insert("c.org".into(), wk("fed.c.org"));
        net.well_known.insert("d.org".into(), wk("fed.d.org"));
        net.well_known.insert("e.org".into(), wk("fed.e.org"));
        net.srv.insert(
            "_matrix-fed._tcp.fed.c.org".into(),
            vec![
                srv(10, 0, 443, "backup.c.org."),
                srv(0, 5, 8443, "main.c.org"),
            ],
        );
        net.srv.insert(
            "_matrix._tcp.fed.d.org".into(),
            vec![srv(0, 0, 9000, "old.d.org")],
        );
        net.ips
            .insert("main.c.org".into(), vec!["192.0.2.1".parse().unwrap()]);
        net.ips
            .insert("backup.c.org".into(), vec!["192.0.2.2".parse().unwrap()]);
        let (r, net) = resolver(net);

        let t = r.target(&sn("a.org")).await.unwrap();
        assert_eq!(t.step, ResolutionStep::WellKnownIp);
        assert_eq!(t.host_header, "10.0.0.1");
        assert_eq!(
            t.candidates,
            vec![(Host::Ip("10.0.0.1".parse().unwrap()), 8448)]
        );

        let t = r.target(&sn("b.org")).await.unwrap();
        assert_eq!(t.step, ResolutionStep::WellKnownExplicitPort);
        assert_eq!(t.host_header, "fed.b.org:8443");
        assert_eq!(t.tls_host, Host::Name("fed.b.org".into()));

        let d = r.resolve(&sn("c.org")).await.unwrap();
        assert_eq!(d.step, ResolutionStep::WellKnownSrv);
        assert_eq!(d.host_header, "fed.c.org");
        assert_eq!(d.tls_name, "fed.c.org");
        assert_eq!(
            d.addrs,
            vec![
                "192.0.2.1:8443".parse().unwrap(),
                "192.0.2.2:443".parse().unwrap()
            ]
        );
        assert_eq!(
            d.base_url, "https://fed.c.org",
            "ports differ: none in the URL"
        );

        let t = r.target(&sn("d.org")).await.unwrap();
        assert_eq!(t.step, ResolutionStep::WellKnownLegacySrv);
        assert_eq!(t.candidates, vec![(Host::Name("old.d.org".into()), 9000)]);
        assert_eq!(t.host_header, "fed.d.org");

        let t = r.target(&sn("e.org")).await.unwrap();
        assert_eq!(t.step, ResolutionStep::WellKnownDefaultPort);
        assert_eq!(t.candidates, vec![(Host::Name("fed.e.org".into()), 8448)]);
        assert_eq!(t.host_header, "fed.e.org");

        // SRV only for names without explicit port; new SRV name first, legacy second.
        let queries = net.srv_queries.lock().unwrap().clone();
        assert_eq!(
            queries,
            vec![
                "_matrix-fed._tcp.fed.c.org",
                "_matrix-fed._tcp.fed.d.org",
                "_matrix._tcp.fed.d.org",
                "_matrix-fed._tcp.fed.e.org",
                "_matrix._tcp.fed.e.org",
            ]
        );
    }

    #[tokio::test]
    async fn without_well_known_srv_then_8448() {
        let mut net = FakeNet::default();
        net.srv.insert(
            "_matrix-fed._tcp.s.org".into(),
            vec![srv(0, 0, 443, "x.s.org")],
        );
        net.srv.insert(
            "_matrix._tcp.l.org".into(),
            vec![srv(0, 0, 8000, "y.l.org")],
        );
        // "." means no service: fall through to 8448.
        net.srv
            .insert("_matrix-fed._tcp.n.org".into(), vec![srv(0, 0, 0, ".")]);
        // An invalid m.server is treated as no well-known.
        net.well_known.insert("n.org".into(), wk("not a name!"));
        net.ips
            .insert("x.s.org".into(), vec!["192.0.2.9".parse().unwrap()]);
        let (r, _) = resolver(net);

        let d = r.resolve(&sn("s.org")).await.unwrap();
        assert_eq!(d.step, ResolutionStep::Srv);
        assert_eq!(d.host_header, "s.org");
        assert_eq!(d.tls_name, "s.org");
        assert_eq!(d.addrs, vec!["192.0.2.9:443".parse().unwrap()]);
        assert_eq!(d.base_url, "https://s.org:443");

        let t = r.target(&sn("l.org")).await.unwrap();
        assert_eq!(t.step, ResolutionStep::LegacySrv);
        assert_eq!(t.host_header, "l.org");

        let t = r.target(&sn("n.org")).await.unwrap();
        assert_eq!(t.step, ResolutionStep::DefaultPort);
        assert_eq!(t.candidates, vec![(Host::Name("n.org".into()), 8448)]);

        assert!(r.resolve(&sn("n.org")).await.is_err(), "no A records");
    }

    #[tokio::test]
    async fn well_known_is_cached() {
        let mut net = FakeNet::default();
        net.well_known.insert("c.org".into(), wk("fed.c.org:1"));
        let (r, net) = resolver(net);
        r.target(&sn("c.org")).await.unwrap();
        r.target(&sn("c.org")).await.unwrap();
        r.target(&sn("missing.org")).await.unwrap();
        r.target(&sn("missing.org")).await.unwrap();
        assert_eq!(net.well_known_fetches.load(Ordering::SeqCst), 2);
        r.forget("c.org");
        r.target(&sn("c.org")).await.unwrap();
        assert_eq!(net.well_known_fetches.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn cache_lifetimes() {
        assert_eq!(
            cache_control_max_age("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(cache_control_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(cache_control_max_age("public"), None);
        let ok = |max_age| WellKnown {
            result: Ok("x.org".into()),
            max_age,
        };
        assert_eq!(well_known_ttl(&ok(None), true), WELL_KNOWN_DEFAULT_TTL);
        assert_eq!(
            well_known_ttl(&ok(Some(Duration::from_secs(7 * 86400))), true),
            WELL_KNOWN_MAX_TTL
        );
        assert_eq!(
            well_known_ttl(&ok(Some(Duration::ZERO)), true),
            WELL_KNOWN_MIN_TTL
        );
        assert_eq!(well_known_ttl(&ok(None), false), WELL_KNOWN_ERROR_TTL);
        let err = WellKnown {
            result: Err("timeout".into()),
            max_age: None,
        };
        assert_eq!(well_known_ttl(&err, true), WELL_KNOWN_ERROR_TTL);
    }

    #[test]
    fn srv_order() {
        let ordered = order_srv(vec![
            srv(10, 1, 1, "c"),
            srv(0, 1, 1, "b"),
            srv(0, 9, 1, "a"),
            srv(0, 0, 0, "."),
        ]);
        let names: Vec<_> = ordered.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "c"]);
    }
}
