//! The answers file: what an unattended install needs to know, checked whole before any
//! disk is touched. Every problem is reported with its line, not only the first.
//!
//! ```toml
//! [disk]                      # the install disk: exactly one must match all that is given
//! min_size = "64G"            # sizes: bytes, or a number with K/M/G/T (powers of 1024)
//! max_size = "4T"
//! model = "SAMSUNG*"          # globs (* and ?) on the disk's model, serial, /dev/disk/by-id name
//! serial = "S4EVNX0R*"
//! by_id = "nvme-SAMSUNG*"
//! slot_size = "8G"            # each of the two system slots [default 8G]
//! data_size = "all"           # the data partition: "all" [default] or a size
//!
//! [system]
//! hostname = "oasis-01"       # [default "oasis"]
//! timezone = "Europe/Berlin"  # [default "Etc/UTC"]
//! ssh_keys = ["ssh-ed25519 AAAA... admin@laptop"]   # root's SSH keys [default none: no SSH]
//! after_install = "reboot"    # or "poweroff" [default reboot]
//!
//! [network]
//! mode = "dhcp"               # or "static" [default dhcp]
//! interface = "en*"           # glob on the interface name [default: every wired one]
//! address = "192.168.10.20/24"   # static only, with:
//! gateway = "192.168.10.1"
//! dns = ["192.168.10.1"]
//!
//! [oasis]
//! profile = "hgx-h200-8"      # a built-in firmware profile id [default: the matching one]
//! listen = "0.0.0.0:8443"     # [default 0.0.0.0:8443]
//! tls = "auto"                # auto, on, off [default auto]
//! allow_plain_http = false
//!
//! [boot]
//! tries = 3                   # boots a new system slot gets to become ready [default 3]
//! health_timeout_s = 600      # how long it has, per boot, for the daemon to be ready
//! ```

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};

/// One problem, with its 1-based line when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// How the install disk is chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSelect {
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub by_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Dhcp,
    Static,
}

/// The answers, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answers {
    pub disk: DiskSelect,
    pub slot_size: u64,
    /// `None`: the rest of the disk.
    pub data_size: Option<u64>,
    pub hostname: String,
    pub timezone: String,
    pub ssh_keys: Vec<String>,
    pub poweroff_after_install: bool,
    pub network_mode: NetworkMode,
    pub interface: Option<String>,
    pub address: Option<String>,
    pub gateway: Option<String>,
    pub dns: Vec<String>,
    pub profile: Option<String>,
    pub listen: String,
    pub tls: String,
    pub allow_plain_http: bool,
    pub tries: u32,
    pub health_timeout_s: u64,
}

const GIB: u64 = 1 << 30;
pub const DEFAULT_SLOT_SIZE: u64 = 8 * GIB;
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";

/// `64G`, `512M`, `1T`, `1024` (bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        (i, 'T' | 't') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mul)
}

/// `*` any run, `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn valid_timezone(tz: &str) -> Result<(), String> {
    if tz.is_empty()
        || tz.starts_with('/')
        || tz.split('/').any(|p| p == ".." || p.is_empty())
        || !tz
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
    {
        return Err(format!(
            "`{tz}` is not a time zone name (e.g. Europe/Berlin)"
        ));
    }
    let zi = std::path::Path::new("/usr/share/zoneinfo");
    if zi.is_dir() && !zi.join(tz).is_file() {
        return Err(format!("unknown time zone `{tz}`"));
    }
    Ok(())
}

fn valid_ssh_key(k: &str) -> Result<(), String> {
    const TYPES: [&str; 7] = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    if k.contains(['\n', '\r', '\0']) {
        return Err("an SSH key is one line".into());
    }
    let mut parts = k.split_whitespace();
    let ty = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("");
    if !TYPES.contains(&ty) {
        return Err(format!(
            "an SSH public key starts with its type ({}), not `{}`",
            TYPES.join(", "),
            ty.chars().take(40).collect::<String>()
        ));
    }
    let b64 = body.len() >= 16
        && body.len().is_multiple_of(4)
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
    if !b64 {
        return Err(format!("the {ty} key's body is not base64"));
    }
    Ok(())
}

/// The line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// A section's keys, read one by one; what is left unread is unknown.
struct Section<'a, 'i> {
    name: &'static str,
    table: Option<&'a DeTable<'i>>,
    text: &'a str,
    read: Vec<&'static str>,
}

impl<'a, 'i> Section<'a, 'i> {
    fn value(&mut self, key: &'static str) -> Option<(&'a DeValue<'i>, usize)> {
        self.read.push(key);
        let t = self.table?;
        let (_, v) = t.iter().find(|(k, _)| k.get_ref() == key)?;
        Some((v.get_ref(), line_of(self.text, v.span().start)))
    }

    fn string(&mut self, key: &'static str, p: &mut Vec<Problem>) -> Option<(String, usize)> {
        let (v, line) = self.value(key)?;
        match v.as_str() {
            Some(s) => Some((s.to_string(), line)),
            None => {
                p.push(Problem {
                    line: Some(line),
                    message: format!("{}.{key} must be a string", self.name),
                });
                None
            }
        }
    }

    fn integer(&mut self, key: &'static str, p: &mut Vec<Problem>) -> Option<(i64, usize)> {
        let (v, line) = self.value(key)?;
        match v.as_integer() {
            Some(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some((n, line)),
                Err(_) => {
                    p.push(Problem {
                        line: Some(line),
                        message: format!("{}.{key} is out of range", self.name),
                    });
                    None
                }
            },
            None => {
                p.push(Problem {
                    line: Some(line),
                    message: format!("{}.{key} must be an integer", self.name),
                });
                None
            }
        }
    }

    fn boolean(&mut self, key: &'static str, p: &mut Vec<Problem>) -> Option<bool> {
        let (v, line) = self.value(key)?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                p.push(Problem {
                    line: Some(line),
                    message: format!("{}.{key} must be true or false", self.name),
                });
                None
            }
        }
    }

    fn strings(&mut self, key: &'static str, p: &mut Vec<Problem>) -> Option<Vec<(String, usize)>> {
        let (v, line) = self.value(key)?;
        let Some(arr) = v.as_array() else {
            p.push(Problem {
                line: Some(line),
                message: format!("{}.{key} must be a list of strings", self.name),
            });
            return None;
        };
        let mut out = Vec::new();
        for item in arr {
            match item.get_ref().as_str() {
                Some(s) => out.push((s.to_string(), line_of(self.text, item.span().start))),
                None => p.push(Problem {
                    line: Some(line_of(self.text, item.span().start)),
                    message: format!("{}.{key} must hold strings only", self.name),
                }),
            }
        }
        Some(out)
    }

    fn size(&mut self, key: &'static str, p: &mut Vec<Problem>) -> Option<(u64, usize)> {
        let (v, line) = self.value(key)?;
        let parsed = match v {
            DeValue::String(s) => parse_size(s),
            DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => None,
        };
        match parsed {
            Some(n) => Some((n, line)),
            None => {
                p.push(Problem {
                    line: Some(line),
                    message: format!(
                        "{}.{key} must be a size: bytes, or a number with K, M, G or T",
                        self.name
                    ),
                });
                None
            }
        }
    }

    /// Every key not read is a problem.
    fn finish(self, p: &mut Vec<Problem>) {
        let Some(t) = self.table else { return };
        for (k, _) in t.iter() {
            if !self.read.contains(&k.get_ref().as_ref()) {
                p.push(Problem {
                    line: Some(line_of(self.text, k.span().start)),
                    message: format!(
                        "unknown key `{}` in [{}] (known: {})",
                        k.get_ref(),
                        self.name,
                        self.read.join(", ")
                    ),
                });
            }
        }
    }
}

const SECTIONS: [&str; 5] = ["disk", "system", "network", "oasis", "boot"];

/// Parses and checks an answers file: the answers, or every problem found.
pub fn check(text: &str) -> Result<Answers, Vec<Problem>> {
    let doc = match DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => {
            return Err(vec![Problem {
                line: e.span().map(|s| line_of(text, s.start)),
                message: format!("not valid TOML: {}", e.message().trim()),
            }]);
        }
    };
    let root = doc.get_ref();
    let mut p = Vec::new();
    for (k, v) in root.iter() {
        let line = Some(line_of(text, k.span().start));
        if !SECTIONS.contains(&k.get_ref().as_ref()) {
            p.push(Problem {
                line,
                message: format!(
                    "unknown section [{}] (known: {})",
                    k.get_ref(),
                    SECTIONS.join(", ")
                ),
            });
        } else if v.get_ref().as_table().is_none() {
            p.push(Problem {
                line,
                message: format!("`{}` must be a section ([{}])", k.get_ref(), k.get_ref()),
            });
        }
    }
    let section = |name: &'static str| Section {
        name,
        table: root
            .iter()
            .find(|(k, _)| k.get_ref() == name)
            .and_then(|(_, v)| v.get_ref().as_table()),
        text,
        read: Vec::new(),
    };

    // [disk]
    let mut d = section("disk");
    let min_size = d.size("min_size", &mut p);
    let max_size = d.size("max_size", &mut p);
    let glob = |d: &mut Section<'_, '_>, key: &'static str, p: &mut Vec<Problem>| {
        let (g, line) = d.string(key, p)?;
        if g.is_empty() || g.len() > 128 || g.chars().any(char::is_control) {
            p.push(Problem {
                line: Some(line),
                message: format!("disk.{key} must be a glob of 1 to 128 printable characters"),
            });
            return None;
        }
        Some(g)
    };
    let model = glob(&mut d, "model", &mut p);
    let serial = glob(&mut d, "serial", &mut p);
    let by_id = glob(&mut d, "by_id", &mut p);
    let slot_size = match d.size("slot_size", &mut p) {
        Some((n, line)) if n < GIB => {
            p.push(Problem {
                line: Some(line),
                message: format!("disk.slot_size must be at least 1G (a system image is about 300 MB), got {n} bytes"),
            });
            DEFAULT_SLOT_SIZE
        }
        Some((n, _)) => n,
        None => DEFAULT_SLOT_SIZE,
    };
    let data_size = match d.value("data_size") {
        None => None,
        Some((DeValue::String(s), _)) if s == "all" => None,
        Some(_) => {
            d.read.pop();
            match d.size("data_size", &mut p) {
                Some((n, line)) if n < GIB => {
                    p.push(Problem {
                        line: Some(line),
                        message: "disk.data_size must be \"all\" or at least 1G".into(),
                    });
                    None
                }
                Some((n, _)) => Some(n),
                None => None,
            }
        }
    };
    if let (Some((lo, _)), Some((hi, line))) = (min_size, max_size)
        && lo > hi
    {
        p.push(Problem {
            line: Some(line),
            message: format!("disk.max_size ({hi} bytes) is below disk.min_size ({lo} bytes)"),
        });
    }
    d.finish(&mut p);

    // [system]
    let mut s = section("system");
    let hostname = match s.string("hostname", &mut p) {
        Some((h, line)) if !valid_hostname(&h) => {
            p.push(Problem {
                line: Some(line),
                message: format!("system.hostname `{h}` is not a host name (letters, digits and -, labels of 1 to 63)"),
            });
            String::new()
        }
        Some((h, _)) => h,
        None => "oasis".into(),
    };
    let timezone = match s.string("timezone", &mut p) {
        Some((tz, line)) => {
            if let Err(m) = valid_timezone(&tz) {
                p.push(Problem {
                    line: Some(line),
                    message: format!("system.timezone: {m}"),
                });
            }
            tz
        }
        None => "Etc/UTC".into(),
    };
    let mut ssh_keys = Vec::new();
    for (k, line) in s.strings("ssh_keys", &mut p).unwrap_or_default() {
        match valid_ssh_key(&k) {
            Ok(()) => ssh_keys.push(k),
            Err(m) => p.push(Problem {
                line: Some(line),
                message: format!("system.ssh_keys: {m}"),
            }),
        }
    }
    let poweroff_after_install = match s.string("after_install", &mut p) {
        Some((v, _)) if v == "reboot" => false,
        Some((v, _)) if v == "poweroff" => true,
        Some((v, line)) => {
            p.push(Problem {
                line: Some(line),
                message: format!(
                    "system.after_install must be \"reboot\" or \"poweroff\", got `{v}`"
                ),
            });
            false
        }
        None => false,
    };
    s.finish(&mut p);

    // [network]
    let mut n = section("network");
    let network_mode = match n.string("mode", &mut p) {
        Some((m, _)) if m == "dhcp" => NetworkMode::Dhcp,
        Some((m, _)) if m == "static" => NetworkMode::Static,
        Some((m, line)) => {
            p.push(Problem {
                line: Some(line),
                message: format!("network.mode must be \"dhcp\" or \"static\", got `{m}`"),
            });
            NetworkMode::Dhcp
        }
        None => NetworkMode::Dhcp,
    };
    let interface = n.string("interface", &mut p).and_then(|(i, line)| {
        if i.is_empty()
            || i.len() > 15
            || !i
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "*?-_.".contains(c))
        {
            p.push(Problem {
                line: Some(line),
                message: format!("network.interface `{i}` is not an interface name or glob"),
            });
            None
        } else {
            Some(i)
        }
    });
    let address = n.string("address", &mut p);
    let gateway = n.string("gateway", &mut p);
    let dns = n.strings("dns", &mut p).unwrap_or_default();
    if let Some((a, line)) = &address {
        let ok = a.split_once('/').is_some_and(|(ip, len)| {
            ip.parse::<IpAddr>().is_ok_and(|ip| {
                len.parse::<u8>()
                    .is_ok_and(|l| l <= if ip.is_ipv4() { 32 } else { 128 })
            })
        });
        if !ok {
            p.push(Problem {
                line: Some(*line),
                message: format!("network.address `{a}` is not an address with its prefix length (192.168.10.20/24)"),
            });
        }
    }
    for (ip, line) in gateway.iter().chain(dns.iter()) {
        if ip.parse::<IpAddr>().is_err() {
            p.push(Problem {
                line: Some(*line),
                message: format!("`{ip}` is not an IP address"),
            });
        }
    }
    match network_mode {
        NetworkMode::Static if address.is_none() => p.push(Problem {
            line: None,
            message: "network.mode = \"static\" needs network.address".into(),
        }),
        NetworkMode::Dhcp => {
            for (what, v) in [("address", &address), ("gateway", &gateway)] {
                if let Some((_, line)) = v {
                    p.push(Problem {
                        line: Some(*line),
                        message: format!(
                            "network.{what} is for mode = \"static\"; this network uses DHCP"
                        ),
                    });
                }
            }
        }
        NetworkMode::Static => {}
    }
    n.finish(&mut p);

    // [oasis]
    let mut o = section("oasis");
    let profile = o.string("profile", &mut p).and_then(|(id, line)| {
        let known: Vec<String> = firmware_profiles::builtin()
            .map(|l| l.into_iter().map(|l| l.profile.id).collect())
            .unwrap_or_default();
        if known.contains(&id) {
            Some(id)
        } else {
            p.push(Problem {
                line: Some(line),
                message: format!(
                    "oasis.profile `{id}` is not a built-in profile ({})",
                    known.join(", ")
                ),
            });
            None
        }
    });
    let listen = match o.string("listen", &mut p) {
        Some((l, line)) => {
            if l.parse::<SocketAddr>().is_err() {
                p.push(Problem {
                    line: Some(line),
                    message: format!(
                        "oasis.listen `{l}` is not an address and port (0.0.0.0:8443)"
                    ),
                });
            }
            l
        }
        None => DEFAULT_LISTEN.into(),
    };
    let tls = match o.string("tls", &mut p) {
        Some((t, _)) if ["auto", "on", "off"].contains(&t.as_str()) => t,
        Some((t, line)) => {
            p.push(Problem {
                line: Some(line),
                message: format!("oasis.tls must be auto, on or off, got `{t}`"),
            });
            "auto".into()
        }
        None => "auto".into(),
    };
    let allow_plain_http = o.boolean("allow_plain_http", &mut p).unwrap_or(false);
    let loopback = listen
        .parse::<SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    if tls == "off" && !loopback && !allow_plain_http {
        p.push(Problem {
            line: None,
            message: "oasis.tls = \"off\" on a LAN address sends keys in clear; set oasis.allow_plain_http = true to mean it".into(),
        });
    }
    o.finish(&mut p);

    // [boot]
    let mut b = section("boot");
    let tries = match b.integer("tries", &mut p) {
        Some((t, _)) if (1..=10).contains(&t) => t as u32,
        Some((t, line)) => {
            p.push(Problem {
                line: Some(line),
                message: format!("boot.tries must be between 1 and 10, got {t}"),
            });
            3
        }
        None => 3,
    };
    let health_timeout_s = match b.integer("health_timeout_s", &mut p) {
        Some((t, _)) if (30..=3600).contains(&t) => t as u64,
        Some((t, line)) => {
            p.push(Problem {
                line: Some(line),
                message: format!("boot.health_timeout_s must be between 30 and 3600, got {t}"),
            });
            600
        }
        None => 600,
    };
    b.finish(&mut p);

    if !p.is_empty() {
        p.sort_by_key(|x| x.line.unwrap_or(usize::MAX));
        return Err(p);
    }
    Ok(Answers {
        disk: DiskSelect {
            min_size: min_size.map(|x| x.0),
            max_size: max_size.map(|x| x.0),
            model,
            serial,
            by_id,
        },
        slot_size,
        data_size,
        hostname,
        timezone,
        ssh_keys,
        poweroff_after_install,
        network_mode,
        interface,
        address: address.map(|x| x.0),
        gateway: gateway.map(|x| x.0),
        dns: dns.into_iter().map(|x| x.0).collect(),
        profile,
        listen,
        tls,
        allow_plain_http,
        tries,
        health_timeout_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[disk]
min_size = "16G"
model = "QEMU*"
slot_size = "2G"

[system]
hostname = "oasis-01"
timezone = "Etc/UTC"
ssh_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@laptop"]
after_install = "poweroff"

[network]
mode = "static"
address = "10.0.2.15/24"
gateway = "10.0.2.2"
dns = ["10.0.2.3"]

[oasis]
profile = "cpu-dev"
listen = "0.0.0.0:8443"

[boot]
tries = 1
health_timeout_s = 120
"#;

    #[test]
    fn a_good_file_gives_its_answers() {
        let a = check(GOOD).unwrap();
        assert_eq!(a.disk.min_size, Some(16 << 30));
        assert_eq!(a.slot_size, 2 << 30);
        assert_eq!(a.data_size, None);
        assert!(a.poweroff_after_install);
        assert_eq!(a.network_mode, NetworkMode::Static);
        assert_eq!(a.profile.as_deref(), Some("cpu-dev"));
        assert_eq!((a.tries, a.health_timeout_s), (1, 120));
        // An empty file is all defaults.
        let d = check("").unwrap();
        assert_eq!(
            (d.hostname.as_str(), d.listen.as_str()),
            ("oasis", DEFAULT_LISTEN)
        );
    }

    #[test]
    fn every_problem_is_named_with_its_line() {
        let bad = r#"
[disk]
min_size = "2T"
max_size = "1T"
slot_size = "10M"
colour = "blue"

[system]
hostname = "-bad-"
timezone = "../../etc/passwd"
ssh_keys = ["ssh-dss AAAA", 3]
after_install = "explode"

[network]
mode = "dhcp"
address = "10.0.0.1/24"

[oasis]
profile = "dgx-9000"
listen = "everywhere"
tls = "off"

[boot]
tries = 0

[extra]
x = 1
"#;
        let p = check(bad).unwrap_err();
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        let want = [
            "line 4: disk.max_size",
            "line 5: disk.slot_size must be at least 1G",
            "line 6: unknown key `colour` in [disk]",
            "line 9: system.hostname `-bad-`",
            "line 10: system.timezone",
            "line 11: system.ssh_keys: an SSH public key starts with its type",
            "line 11: system.ssh_keys must hold strings only",
            "line 12: system.after_install",
            "line 16: network.address is for mode = \"static\"",
            "line 19: oasis.profile `dgx-9000`",
            "line 20: oasis.listen `everywhere`",
            "line 24: boot.tries must be between 1 and 10, got 0",
            "line 26: unknown section [extra]",
            "oasis.tls = \"off\" on a LAN address",
        ];
        for w in want {
            assert!(
                text.iter().any(|t| t.starts_with(w) || t.contains(w)),
                "missing {w:?} in {text:#?}"
            );
        }
        assert_eq!(p.len(), want.len(), "{text:#?}");
    }

    #[test]
    fn broken_toml_names_its_line() {
        let p = check("[disk]\nmin_size = \n").unwrap_err();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, Some(2), "{}", p[0]);
    }

    #[test]
    fn sizes_and_globs() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1t"), Some(1 << 40));
        assert_eq!(parse_size("12345"), Some(12345));
        assert_eq!(parse_size("99999999999T"), None);
        assert_eq!(parse_size("G"), None);
        assert!(glob_match("QEMU*", "QEMU HARDDISK"));
        assert!(glob_match("nvme-*_S4?N*", "nvme-SAMSUNG_S4EN123"));
        assert!(!glob_match("QEMU", "QEMU HARDDISK"));
    }
}
