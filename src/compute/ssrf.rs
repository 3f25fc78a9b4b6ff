//! The SSRF guard for every outgoing request a client can aim (the `web`
//! service, `callbackUrl`): only `http`/`https`; the host is resolved once
//! and every address must be public (no loopback, private, link-local —
//! which includes the cloud metadata address 169.254.169.254 —, shared,
//! multicast, reserved, unique-local, IPv4-mapped/compatible, NAT64 or 6to4
//! IPv6) unless the operator allow-listed it; the connection is pinned to the
//! checked addresses (no second DNS answer can swap them), proxies are
//! ignored, redirects are followed by hand and each hop is checked again;
//! the whole exchange has a time cap and the body a size cap.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use reqwest::{Method, StatusCode, Url};

/// Why a request was not made or not finished.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// Not a URL we fetch.
    #[error("{0}")]
    BadUrl(String),
    /// The address is not public and not allow-listed.
    #[error("{0} resolves to {1}, a non-public address; refused")]
    Blocked(String, IpAddr),
    /// DNS failed.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// Too many redirects.
    #[error("more than {0} redirects")]
    Redirects(u32),
    /// The exchange failed or timed out.
    #[error("{0}")]
    Fetch(String),
    /// The body is larger than the cap.
    #[error("response body larger than {0} bytes")]
    TooLarge(u64),
}

/// Limits of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Whole exchange, redirects included.
    pub timeout: Duration,
    /// Body bytes read at most.
    pub max_bytes: u64,
    /// Redirects followed at most.
    pub max_redirects: u32,
}

/// A fetched response.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Final URL (after redirects).
    pub url: String,
    /// Status.
    pub status: StatusCode,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// The guard.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<IpNet>,
}

impl Guard {
    /// A guard allowing these non-public ranges (`10.0.0.0/8`, `127.0.0.1`).
    pub fn new(allow: &[String]) -> crate::Result<Self> {
        let mut nets = Vec::new();
        for a in allow {
            let net = a
                .parse::<IpNet>()
                .or_else(|_| a.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| crate::Error::Config {
                    key: "compute.web.allow".into(),
                    message: format!("`{a}` is not an IP address or CIDR range"),
                })?;
            nets.push(net);
        }
        Ok(Self { allow: nets })
    }

    /// Whether a connection to `ip` is allowed.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allow.iter().any(|n| n.contains(&ip))
    }

    /// Checks a URL's form and resolves its host once; every address must be allowed.
    pub async fn resolve(&self, url: &Url) -> Result<(String, Vec<SocketAddr>), GuardError> {
        match url.scheme() {
            "http" | "https" => {}
            s => {
                return Err(GuardError::BadUrl(format!(
                    "scheme `{s}` is not fetched; use http or https"
                )));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(GuardError::BadUrl(
                "URLs with credentials are not fetched".into(),
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| GuardError::BadUrl("URL has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else {
            tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|_| GuardError::Resolve(host.clone()))?
                .collect()
        };
        if addrs.is_empty() {
            return Err(GuardError::Resolve(host));
        }
        // One blocked answer refuses the host: a name that mixes public and
        // private answers is a rebinding attempt, not a misconfiguration.
        if let Some(bad) = addrs.iter().find(|a| !self.allowed(a.ip())) {
            return Err(GuardError::Blocked(host, bad.ip()));
        }
        Ok((host, addrs))
    }

    /// Makes a request through the guard.
    pub async fn fetch(
        &self,
        method: Method,
        url: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
        limits: Limits,
    ) -> Result<Fetched, GuardError> {
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let mut url =
            Url::parse(url).map_err(|e| GuardError::BadUrl(format!("invalid URL: {e}")))?;
        let mut method = method;
        let mut body = body;
        let mut hops = 0u32;
        loop {
            let (host, addrs) = self.resolve(&url).await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .resolve_to_addrs(&host, &addrs)
                .timeout(left)
                .connect_timeout(left.min(Duration::from_secs(10)))
                .build()
                .map_err(|e| GuardError::Fetch(format!("client: {e}")))?;
            let mut req = client.request(method.clone(), url.clone());
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            let fut = async {
                let mut resp = req
                    .send()
                    .await
                    .map_err(|e| GuardError::Fetch(describe(&e)))?;
                let status = resp.status();
                if status.is_redirection()
                    && let Some(loc) = resp.headers().get(reqwest::header::LOCATION)
                {
                    let loc = loc
                        .to_str()
                        .map_err(|_| GuardError::Fetch("bad Location header".into()))?;
                    let next = url
                        .join(loc)
                        .map_err(|e| GuardError::BadUrl(format!("bad redirect: {e}")))?;
                    return Ok(Err((status, next)));
                }
                if resp.content_length().is_some_and(|n| n > limits.max_bytes) {
                    return Err(GuardError::TooLarge(limits.max_bytes));
                }
                let headers = resp
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let mut out = Vec::new();
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| GuardError::Fetch(describe(&e)))?
                {
                    if out.len() as u64 + chunk.len() as u64 > limits.max_bytes {
                        return Err(GuardError::TooLarge(limits.max_bytes));
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(Ok(Fetched {
                    url: url.to_string(),
                    status,
                    headers,
                    body: out,
                }))
            };
            let outcome = tokio::time::timeout_at(deadline, fut).await.map_err(|_| {
                GuardError::Fetch(format!("timed out after {} ms", limits.timeout.as_millis()))
            })??;
            match outcome {
                Ok(done) => return Ok(done),
                Err((status, next)) => {
                    hops += 1;
                    if hops > limits.max_redirects {
                        return Err(GuardError::Redirects(limits.max_redirects));
                    }
                    if status == StatusCode::SEE_OTHER
                        || ((status == StatusCode::MOVED_PERMANENTLY
                            || status == StatusCode::FOUND)
                            && method == Method::POST)
                    {
                        method = Method::GET;
                        body = None;
                    }
                    url = next;
                }
            }
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        // No URL in the text (it could carry a client's secrets).
        e.without_url_ref().to_string()
    }
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut text = self.to_string();
        if let Some(u) = self.url() {
            text = text.replace(u.as_str(), "<url>");
        }
        text
    }
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 shared (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || (s[0] & 0xffc0) == 0xfec0 // site-local
        || ip.to_ipv4_mapped().is_some() // ::ffff:a.b.c.d
        || (s[0..6] == [0, 0, 0, 0, 0, 0]) // ::a.b.c.d (compatible) and ::/96
        || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64
        || s[0] == 0x2002 // 6to4
        || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_refused() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
        ] {
            let ip: IpAddr = bad.parse().expect(bad);
            assert!(!is_public(ip), "{bad} must be refused");
        }
        for good in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "93.184.216.34"] {
            let ip: IpAddr = good.parse().expect(good);
            assert!(is_public(ip), "{good} is public");
        }
        let g = Guard::new(&["127.0.0.1/32".into()]).expect("guard");
        assert!(g.allowed("127.0.0.1".parse().expect("ip")));
        assert!(!g.allowed("127.0.0.2".parse().expect("ip")));
    }

    #[tokio::test]
    async fn urls_are_checked_before_any_connection() {
        let g = Guard::default();
        let limits = Limits {
            timeout: Duration::from_secs(2),
            max_bytes: 1024,
            max_redirects: 2,
        };
        for (url, want) in [
            ("file:///etc/passwd", "scheme"),
            ("http://127.0.0.1:1/", "non-public"),
            ("http://[::ffff:127.0.0.1]:1/", "non-public"),
            ("http://169.254.169.254/latest/meta-data", "non-public"),
            ("http://localhost:1/", "non-public"),
            ("http://user:pw@example.com/", "credentials"),
        ] {
            let err = g
                .fetch(Method::GET, url, &[], None, limits)
                .await
                .expect_err(url)
                .to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
    }
}
