//! Which destinations the daemon's outgoing requests may reach: deliveries, and the PMS API calls
//! of enrichment, OAuth2 token requests and automatic registration.
//!
//! A subscription URL or an account's `apiBaseUrl` is operator input, and a daemon inside a private
//! network must not become a way to reach it (nor hand an account's credentials to whatever
//! listens on loopback). Unless `allow_private_destinations` is set, addresses that are loopback,
//! private, link-local, unique-local, unspecified or multicast are refused, both when the URL is an
//! IP literal ([`check_url`], [`check_literal_host`]; HTTP clients never resolve a literal) and
//! after DNS resolution ([`GuardedResolver`]). The resolver check runs inside the HTTP client, so
//! the address checked is the address connected to (no DNS rebinding between check and connect);
//! its refusal is a [`Refused`] error that [`refusal_in`] finds in a client error's chain.
//!
//! An account's `apiBaseUrl` carries the account's API credentials, so it must also use https
//! (plain http only where private destinations are allowed, for local test servers) and must not
//! carry a user name or password ([`check_api_base_url`]).

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

/// Check a subscription URL's form, and its host when it is an IP literal or a `localhost` name.
pub fn check_url(url: &str, allow_private: bool) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|error| format!("{url:?} is not a URL: {error}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} must use http or https"));
    }
    check_literal_host(&parsed, allow_private)?;
    if let Some(url::Host::Domain(domain)) = parsed.host()
        && !allow_private
        && is_localhost_name(domain)
    {
        return Err(format!("{url:?} points to localhost; set allow_private_destinations to allow it"));
    }
    Ok(parsed)
}

/// Check an account's `apiBaseUrl` (where the account's API credentials go): [`check_url`], and
/// https unless private destinations are allowed, and no user name or password in the URL.
pub fn check_api_base_url(url: &str, allow_private: bool) -> Result<url::Url, String> {
    let parsed = check_url(url, allow_private)?;
    check_api_base_form(&parsed, allow_private)?;
    Ok(parsed)
}

/// The form rules of an API base URL (scheme and user info), without the host checks; the
/// enrichment client applies them again at request time.
pub fn check_api_base_form(url: &url::Url, allow_private: bool) -> Result<(), String> {
    if url.scheme() != "https" && !allow_private {
        return Err(format!("{:?} must use https (http only with allow_private_destinations)", url.as_str()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{:?} must not carry a user name or password; give credentials in `credentials`", redacted(url)));
    }
    Ok(())
}

/// Refuse a URL without a host, or whose host is an IP literal deliveries may not reach. Names are
/// left to [`GuardedResolver`]: an HTTP client resolves them, never literals.
pub fn check_literal_host(url: &url::Url, allow_private: bool) -> Result<(), String> {
    let literal = match url.host() {
        None => return Err(format!("{:?} has no host", redacted(url))),
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(url::Host::Domain(_)) => return Ok(()),
    };
    if allow_private || is_public(literal) {
        return Ok(());
    }
    Err(format!("{:?} points to a private or loopback address; set allow_private_destinations to allow it", redacted(url)))
}

fn is_localhost_name(domain: &str) -> bool {
    let domain = domain.trim_end_matches('.');
    domain.eq_ignore_ascii_case("localhost") || domain.to_ascii_lowercase().ends_with(".localhost")
}

/// The URL without its user info, for messages (a password must not reach a log or an answer).
fn redacted(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// The resolver's refusal: a name that resolves only to addresses the policy refuses.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The destination policy's refusal in an HTTP client error's chain of causes, if that is why the
/// request failed (so callers can report a refusal rather than retry a connection error).
pub fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return Some(refused.0.clone());
        }
        cause = current.source();
    }
    None
}

/// A resolver that drops addresses outgoing requests may not reach; a name with nothing left is a
/// [`Refused`] error.
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
                let message = format!(
                    "{host} resolves only to private or loopback addresses, which the daemon may not reach; \
                     set allow_private_destinations to allow it"
                );
                return Err(Box::new(Refused(message)) as Box<dyn std::error::Error + Send + Sync>);
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
        assert!(check_url("http://LOCALHOST./x", false).is_err());
        assert!(check_url("http://api.localhost/x", false).is_err());
    }

    #[test]
    fn api_base_urls_need_https_and_no_user_info_unless_private_is_allowed() {
        assert!(check_api_base_url("https://open-api.guesty.com", false).is_ok());
        assert!(check_api_base_url("http://open-api.guesty.com", false).is_err(), "credentials never go out in clear text");
        assert!(check_api_base_url("http://127.0.0.1:9000/api", true).is_ok(), "local test servers when allowed");
        for refused in [
            "https://169.254.169.254/latest",
            "https://127.0.0.1:9000/",
            "https://[::1]/",
            "https://0.0.0.0/",
            "https://224.0.0.1/",
            "https://10.0.0.5/",
            "https://localhost/",
        ] {
            assert!(check_api_base_url(refused, false).is_err(), "{refused}");
        }
        let with_password = check_api_base_url("https://user:hunter2@api.example.com/", false).unwrap_err();
        assert!(!with_password.contains("hunter2"), "the message must not echo the password: {with_password}");
        assert!(check_api_base_url("https://user@api.example.com/", true).is_err());
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_loopback_addresses_with_a_recognizable_error() {
        let refused = GuardedResolver { allow_private: false }.resolve("localhost".parse().unwrap()).await.err().expect("refused");
        assert!(refusal_in(refused.as_ref()).is_some_and(|message| message.contains("localhost")), "{refused}");
        let allowed = GuardedResolver { allow_private: true }.resolve("localhost".parse().unwrap()).await;
        assert!(allowed.is_ok_and(|mut addresses| addresses.next().is_some()));
    }
}
