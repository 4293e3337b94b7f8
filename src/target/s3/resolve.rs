//! The endpoint's address for each request, without a thread per request.
//!
//! ureq resolves the host before every request, even one that then reuses a
//! pooled connection, and with a resolve timeout set its default resolver
//! spawns a thread for each lookup. On a loaded small host that costs a
//! scheduling round trip per request (1 to 4 ms measured on 2 busy cores,
//! several times per `push`). So: an endpoint given as an IP address
//! (`http://127.0.0.1:3900`, `http://[::1]:3900`) is its own address, with
//! no lookup; a host name is looked up by ureq's default resolver (under the
//! resolve timeout, as before) and the answer reused for [`REUSE_FOR`], so a
//! busy stream looks its endpoint up a few times a minute, not per request.
//! A failed lookup is not remembered.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a host name's addresses are reused before the next lookup.
pub const REUSE_FOR: Duration = Duration::from_secs(30);

/// [`Resolver`] for the agent (see the module doc).
#[derive(Default)]
pub struct EndpointResolver {
    lookup: DefaultResolver,
    /// The last lookup: `host:port`, when, and its addresses.
    last: Mutex<Option<(String, Instant, ResolvedSocketAddrs)>>,
}

impl fmt::Debug for EndpointResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointResolver").finish_non_exhaustive()
    }
}

impl Resolver for EndpointResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host_port = match (uri.scheme(), uri.authority()) {
            (Some(scheme), Some(authority)) => DefaultResolver::host_and_port(scheme, authority),
            _ => None,
        };
        let Some(host_port) = host_port else {
            return self.lookup.resolve(uri, config, timeout);
        };
        if let Some(literal) = ip_literal(&host_port) {
            let mut addrs = self.lookup.empty();
            addrs.push(literal);
            return Ok(addrs);
        }
        let now = Instant::now();
        if let Some(addrs) =
            reusable(&self.last.lock().unwrap_or_else(PoisonError::into_inner), &host_port, now)
        {
            return Ok(addrs);
        }
        let addrs = self.lookup.resolve(uri, config, timeout)?;
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some((host_port, now, addrs.clone()));
        Ok(addrs)
    }
}

/// The address `host:port` names when its host is an IP address
/// (`[...]` for IPv6), not a name to look up.
fn ip_literal(host_port: &str) -> Option<SocketAddr> {
    host_port.parse().ok()
}

/// The remembered addresses of `host_port`, if looked up less than
/// [`REUSE_FOR`] before `now`.
fn reusable(
    last: &Option<(String, Instant, ResolvedSocketAddrs)>,
    host_port: &str,
    now: Instant,
) -> Option<ResolvedSocketAddrs> {
    match last {
        Some((name, at, addrs)) if name == host_port && now.saturating_duration_since(*at) < REUSE_FOR => {
            Some(addrs.clone())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_are_their_own_address_and_names_are_not() {
        assert_eq!(ip_literal("127.0.0.1:3900"), Some("127.0.0.1:3900".parse().unwrap()));
        assert_eq!(ip_literal("[::1]:443"), Some("[::1]:443".parse().unwrap()));
        assert_eq!(ip_literal("localhost:3900"), None);
        assert_eq!(ip_literal("s3.eu-west-1.amazonaws.com:443"), None);
        assert_eq!(ip_literal("127.0.0.1.example.net:80"), None);
    }

    #[test]
    fn a_lookup_is_reused_for_the_same_name_only_and_not_after_reuse_for() {
        let resolver = EndpointResolver::default();
        let mut addrs = resolver.lookup.empty();
        addrs.push("192.0.2.7:443".parse().unwrap());
        let at = Instant::now();
        let last = Some(("s3.example.net:443".to_string(), at, addrs.clone()));
        let found = reusable(&last, "s3.example.net:443", at + REUSE_FOR - Duration::from_millis(1));
        assert_eq!(found.map(|a| a.to_vec()), Some(addrs.to_vec()));
        assert!(reusable(&last, "s3.example.net:443", at + REUSE_FOR).is_none(), "expired");
        assert!(reusable(&last, "other.example.net:443", at).is_none(), "another host");
        assert!(reusable(&None, "s3.example.net:443", at).is_none(), "nothing looked up yet");
    }
}
