//! Which destinations a delivery may reach.
//!
//! A subscription URL is operator input, and a daemon inside a private network must not become a
//! way to reach it. Unless `allow_private_destinations` is set, addresses that are loopback,
//! private, link-local, unique-local, unspecified or multicast are refused, both when the URL is
//! an IP literal and after DNS resolution. The check runs inside the HTTP client's resolver, so
//! the address checked is the address connected to (no DNS rebinding between check and connect).

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `address` is one a delivery may reach when private destinations are not allowed.
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64.0.0/10, carrier-grade NAT
                || v4.octets()[0] == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Check a subscription URL's form, and its host when it is an IP literal.
pub fn check_url(url: &str, allow_private: bool) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|error| format!("{url:?} is not a URL: {error}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} must use http or https"));
    }
    match parsed.host() {
        None => return Err(format!("{url:?} has no host")),
        Some(url::Host::Ipv4(v4)) if !allow_private && !is_public(IpAddr::V4(v4)) => {
            return Err(format!("{url:?} points to a private or loopback address; set allow_private_destinations to allow it"));
        }
        Some(url::Host::Ipv6(v6)) if !allow_private && !is_public(IpAddr::V6(v6)) => {
            return Err(format!("{url:?} points to a private or loopback address; set allow_private_destinations to allow it"));
        }
        Some(url::Host::Domain(domain))
            if !allow_private && (domain.eq_ignore_ascii_case("localhost") || domain.ends_with(".localhost")) =>
        {
            return Err(format!("{url:?} points to localhost; set allow_private_destinations to allow it"));
        }
        _ => {}
    }
    Ok(parsed)
}

/// A resolver that drops addresses deliveries may not reach.
pub struct GuardedResolver {
    /// Skip the check entirely.
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addresses.into_iter().filter(|address| allow_private || is_public(address.ip())).collect();
            if allowed.is_empty() {
                let message = format!("{host} resolves only to private or loopback addresses, which deliveries may not reach");
                return Err(Box::new(std::io::Error::new(std::io::ErrorKind::PermissionDenied, message))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_refused() {
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(address.parse().unwrap()), "{address}");
        }
        for address in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(address.parse().unwrap()), "{address}");
        }
    }

    #[test]
    fn urls_are_checked_for_scheme_and_literal_hosts() {
        assert!(check_url("https://hooks.example.com/x", false).is_ok());
        assert!(check_url("ftp://hooks.example.com/x", false).is_err());
        assert!(check_url("http://127.0.0.1:9000/", false).is_err());
        assert!(check_url("http://localhost:9000/", false).is_err());
        assert!(check_url("http://127.0.0.1:9000/", true).is_ok());
        assert!(check_url("not a url", true).is_err());
    }
}
