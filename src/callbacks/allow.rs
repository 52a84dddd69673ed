//! `--callback-allow`: which hosts callbacks may be POSTed to.
//!
//! Without a list, any `http(s)` URL is a valid callback, which lets anyone who may PUT
//! a state make the leader send requests into the network it sits in (SSRF). With a
//! list, a callback's host must match one of its entries:
//!
//! - `10.0.0.0/8`, `fd00::/8` — a CIDR block; `192.0.2.7`, `::1` — one address. These
//!   match only URLs whose host is an IP literal (`http://10.1.2.3:8080/`); an IPv6
//!   address that maps an IPv4 one (`::ffff:10.1.2.3`) is matched as that IPv4 address.
//! - `hooks.example.com` — a host name, matched exactly (case-insensitively);
//!   `*.example.com` — any name that ends in `.example.com` (not `example.com` itself).
//!   These match only URLs whose host is a name.
//!
//! Names are compared as written, not resolved: the list trusts whoever controls the
//! names it allows (their DNS answers included). Ports are not restricted.
//!
//! `*` alone says "any target" explicitly. A node that listens beyond loopback refuses
//! to start with no list at all ([`check_exposure`]): there, whoever may PUT a state
//! could make the leader POST into its network and read the answer back as state data,
//! so "any" must be a choice, as an open Raft port must be (`--insecure`).
//!
//! The API refuses a PUT whose callback is not allowed (422 `callback_not_allowed`), and
//! the dispatcher checks again before every POST, so a state created before the list
//! was narrowed fails its attempts instead of reaching a target that is now refused.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use reqwest::Url;

/// The parsed `--callback-allow` list. Empty: every `http(s)` target is allowed, as
/// with `*` — but only `*` is allowed on a node that listens beyond loopback.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallbackAllow {
    entries: Vec<Entry>,
    /// `*`: any target, said explicitly.
    any: bool,
}

/// One entry of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// A CIDR block (a single address is a /32 or /128).
    Net(IpNet),
    /// An exact host name, lower-case.
    Name(String),
    /// `*.suffix`: stored as `.suffix`, lower-case.
    Suffix(String),
}

impl CallbackAllow {
    /// Whether every target is allowed (no list, or `*`).
    pub fn is_open(&self) -> bool {
        self.any || self.entries.is_empty()
    }

    /// Whether the flag was given: a list, or `*`.
    pub fn is_given(&self) -> bool {
        self.any || !self.entries.is_empty()
    }

    /// Whether `url` may be a callback target; `Err` says why not.
    pub fn check(&self, url: &str) -> Result<(), String> {
        if self.is_open() {
            return Ok(());
        }
        let url = Url::parse(url).map_err(|e| format!("callback url is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("callback url must be http or https".into());
        }
        let host = url.host_str().ok_or("callback url has no host")?;
        // The URL parser writes IPv4 hosts in dotted decimal and IPv6 ones in brackets,
        // so a host that parses as an address is an IP literal and anything else a name.
        let allowed = match host.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(IpAddr::V6(ip)) => {
                self.allows_ip(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4))
            }
            Ok(ip) => self.allows_ip(ip),
            Err(_) => self.allows_name(host),
        };
        if allowed {
            Ok(())
        } else {
            Err(format!("callback host {host} is not in --callback-allow"))
        }
    }

    fn allows_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.entries.iter().any(|e| match e {
            Entry::Name(n) => *n == name,
            Entry::Suffix(s) => name.len() > s.len() && name.ends_with(s.as_str()),
            Entry::Net(_) => false,
        })
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        self.entries.iter().any(|e| match e {
            Entry::Net(net) => net.contains(&ip),
            _ => false,
        })
    }
}

impl FromStr for CallbackAllow {
    type Err = String;

    /// Parses `10.0.0.0/8,192.0.2.7,hooks.example.com,*.example.com` (blank entries are
    /// skipped, so an empty string is no list).
    /// `*` alone allows any target.
    fn from_str(text: &str) -> Result<Self, String> {
        let texts: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if texts == ["*"] {
            return Ok(CallbackAllow {
                entries: Vec::new(),
                any: true,
            });
        }
        if texts.contains(&"*") {
            return Err("`*` allows every target: give it alone, or list the targets".into());
        }
        let entries = texts
            .into_iter()
            .map(parse_entry)
            .collect::<Result<_, _>>()?;
        Ok(CallbackAllow {
            entries,
            any: false,
        })
    }
}

/// Refuses to start a node that listens beyond loopback with no `--callback-allow`.
pub fn check_exposure(listen: &SocketAddr, allow: &CallbackAllow) -> Result<(), String> {
    if allow.is_given() || listen.ip().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "{listen} is not a loopback address, so callbacks could be aimed at any service \
         this node can reach: give --callback-allow (env SLCT_CALLBACK_ALLOW) the hosts \
         and networks callbacks may target, or --callback-allow '*' to allow any"
    ))
}

fn parse_entry(text: &str) -> Result<Entry, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(Entry::Net(net.trunc()));
    }
    if let Ok(ip) = text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(Entry::Net(IpNet::from(ip)));
    }
    let lower = text.trim_end_matches('.').to_ascii_lowercase();
    let (suffix, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{text:?} is not a CIDR, an IP address, a host name or *.domain"
        ));
    }
    Ok(if suffix {
        Entry::Suffix(format!(".{name}"))
    } else {
        Entry::Name(name.to_owned())
    })
}

impl fmt::Display for CallbackAllow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.any {
            return f.write_str("*");
        }
        let texts: Vec<String> = self
            .entries
            .iter()
            .map(|e| match e {
                Entry::Net(net) => net.to_string(),
                Entry::Name(name) => name.clone(),
                Entry::Suffix(suffix) => format!("*{suffix}"),
            })
            .collect();
        f.write_str(&texts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(text: &str) -> CallbackAllow {
        text.parse().unwrap()
    }

    #[test]
    fn no_list_allows_everything() {
        let open = allow(" , ");
        assert!(open.is_open());
        assert!(open
            .check("http://169.254.169.254/latest/meta-data")
            .is_ok());
    }

    #[test]
    fn a_star_allows_everything_explicitly() {
        let any = allow(" * ");
        assert!(any.is_open() && any.is_given());
        assert!(any.check("http://169.254.169.254/").is_ok());
        assert_eq!(any.to_string(), "*");
        assert!(!allow("").is_given());
    }

    #[test]
    fn beyond_loopback_the_list_must_be_given() {
        let public: SocketAddr = "0.0.0.0:7001".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let err = check_exposure(&public, &allow("")).unwrap_err();
        assert!(
            err.contains("--callback-allow") && err.contains("'*'"),
            "{err}"
        );
        assert!(check_exposure(&public, &allow("*")).is_ok());
        assert!(check_exposure(&public, &allow("10.0.0.0/8")).is_ok());
        assert!(check_exposure(&local, &allow("")).is_ok());
        assert!(check_exposure(&"[::1]:7001".parse().unwrap(), &allow("")).is_ok());
    }

    #[test]
    fn cidrs_and_addresses_match_only_ip_literals() {
        let list = allow("10.0.0.0/8, 192.0.2.7, fd00::/8");
        assert!(list.check("http://10.1.2.3:8080/hook").is_ok());
        assert!(list.check("https://192.0.2.7/").is_ok());
        assert!(list.check("http://[fd12::1]:9000/").is_ok());
        assert!(
            list.check("http://[::ffff:10.0.0.1]/").is_ok(),
            "v4-mapped v6"
        );
        assert!(list.check("http://192.0.2.8/").is_err());
        assert!(list.check("http://127.0.0.1/").is_err());
        assert!(list.check("http://[::1]/").is_err());
        // A name that happens to look like a number is not an address.
        assert!(list.check("http://10.example.com/").is_err());
    }

    #[test]
    fn names_match_exactly_or_by_wildcard_suffix() {
        let list = allow("hooks.example.com,*.svc.internal");
        assert!(list.check("http://hooks.example.com/x").is_ok());
        assert!(list.check("http://HOOKS.Example.com./x").is_ok());
        assert!(list.check("http://a.svc.internal/").is_ok());
        assert!(list.check("http://a.b.svc.internal:81/").is_ok());
        assert!(
            list.check("http://svc.internal/").is_err(),
            "the bare domain"
        );
        assert!(list.check("http://evil-svc.internal/").is_err());
        assert!(list.check("http://hooks.example.com.evil.net/").is_err());
        assert!(list.check("http://localhost/").is_err());
        // Names never match IP entries and the other way round.
        assert!(allow("10.0.0.0/8").check("http://localhost/").is_err());
        assert!(allow("localhost").check("http://127.0.0.1/").is_err());
    }

    #[test]
    fn only_http_urls_with_a_host_pass_a_list() {
        let list = allow("example.com");
        assert!(list.check("ftp://example.com/").is_err());
        assert!(list.check("not a url").is_err());
        assert!(list.check("http://user:pw@example.com/").is_ok());
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in [
            "http://x",
            "a b",
            "*.",
            "10.0.0.0/33",
            "x..y",
            "*,10.0.0.0/8",
            "**",
        ] {
            assert!(bad.parse::<CallbackAllow>().is_err(), "{bad}");
        }
        assert_eq!(
            allow("10.1.2.3/8, *.Example.COM, ::1").to_string(),
            "10.0.0.0/8,*.example.com,::1/128"
        );
    }
}
