//! What the admin types as a box's address, validated once at the edge: a scheme, a host
//! and a port. Everything past this module works on [`Address`], never on raw text.

use std::net::IpAddr;

use crate::Error;

/// The daemon's port when the admin gives none (its `DEFAULT_LISTEN`).
pub const DEFAULT_PORT: u16 = 8080;

/// A box's validated address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// `https` unless the admin asked for `http` on a loopback address.
    pub tls: bool,
    /// Host name or IP address, IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// Whether the address can only reach this machine (`localhost`, 127.0.0.0/8, ::1).
    pub loopback: bool,
}

impl Address {
    /// Parses `host`, `host:port`, `[v6]:port`, optionally with `https://` or `http://` in
    /// front and a trailing `/`. No scheme means `https`. Plain `http` is refused unless
    /// the host is a loopback address: on the LAN the token would travel in clear.
    pub fn parse(input: &str) -> Result<Address, Error> {
        let invalid = |reason: &str| Error::InvalidAddress {
            address: input.to_string(),
            reason: reason.to_string(),
        };
        let text = input.trim();
        let (tls, rest) = if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else if text.contains("://") {
            return Err(invalid("only https:// and http:// are supported"));
        } else {
            (true, text)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Err(invalid("no host given"));
        }
        if rest.contains(['/', '?', '#', '@', ' ']) {
            return Err(invalid(
                "give only host and port, such as 192.168.1.20:8080",
            ));
        }
        let (host, port_text) = if let Some(v6) = rest.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else {
                return Err(invalid("unclosed `[` in an IPv6 address"));
            };
            match after {
                "" => (h, None),
                _ => match after.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => return Err(invalid("expected `:PORT` after `]`")),
                },
            }
        } else if rest.matches(':').count() > 1 {
            // A bare IPv6 address without a port.
            (rest, None)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("no host given"));
        }
        let port = match port_text {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(invalid("the port must be a number between 1 and 65535")),
            },
        };
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !tls && !loopback {
            return Err(Error::PlainHttpNotLoopback {
                address: input.trim().to_string(),
            });
        }
        Ok(Address {
            tls,
            host: host.to_ascii_lowercase(),
            port,
            loopback,
        })
    }

    /// The same host and port over plain HTTP (only for loopback addresses).
    pub fn with_plain_http(&self) -> Result<Address, Error> {
        if !self.loopback {
            return Err(Error::PlainHttpNotLoopback {
                address: self.to_string(),
            });
        }
        Ok(Address {
            tls: false,
            ..self.clone()
        })
    }
}

/// The normalised base URL: `https://host:port`, `https://[v6]:port`.
impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_an_address() {
        let a = Address::parse("192.168.1.20").unwrap();
        assert_eq!(a.to_string(), "https://192.168.1.20:8080");
        assert!(!a.loopback);
        let a = Address::parse(" https://Box.Local:9443/ ").unwrap();
        assert_eq!(a.to_string(), "https://box.local:9443");
        let a = Address::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(a.to_string(), "http://127.0.0.1:8080");
        assert!(a.loopback);
        let a = Address::parse("[::1]:9000").unwrap();
        assert_eq!(a.to_string(), "https://[::1]:9000");
        assert!(a.loopback);
        assert_eq!(
            Address::parse("fe80::1").unwrap().to_string(),
            "https://[fe80::1]:8080"
        );
        assert!(Address::parse("localhost").unwrap().loopback);
    }

    #[test]
    fn refuses_plain_http_on_the_lan() {
        let err = Address::parse("http://10.0.0.5:8080").unwrap_err();
        assert!(matches!(err, Error::PlainHttpNotLoopback { .. }), "{err}");
        assert!(err.to_string().contains("10.0.0.5"), "{err}");
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "",
            "https://",
            "ftp://x",
            "host:0",
            "host:99999",
            "host/path",
            "[::1",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
