//! Dotted version numbers (`550.54.14`, `12.4`) compared part by part, so `550.100` is
//! newer than `550.54` (a string comparison gets that wrong).

use std::cmp::Ordering;

/// A version as its numeric parts.
#[derive(Debug, Clone)]
pub struct Version(Vec<u64>);

impl Version {
    /// `None` unless `s` is one to four dot-separated decimal numbers.
    pub fn parse(s: &str) -> Option<Version> {
        let parts: Option<Vec<u64>> = s.trim().split('.').map(|p| p.parse().ok()).collect();
        parts.filter(|p| (1..=4).contains(&p.len())).map(Version)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    /// Missing parts count as 0: `12.4` == `12.4.0`.
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.0.len().max(other.0.len());
        (0..n)
            .map(|i| {
                let a = self.0.get(i).copied().unwrap_or(0);
                let b = other.0.get(i).copied().unwrap_or(0);
                a.cmp(&b)
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

/// Whether `text` matches `pattern` with `*` (any run) and `?` (any one character),
/// ignoring ASCII case (VBIOS versions are hexadecimal).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    // Iterative matching with one backtrack point for the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        let v = |s| Version::parse(s).unwrap_or_else(|| panic!("{s}"));
        assert!(v("550.100") > v("550.54.14"));
        assert!(v("535.183.01") < v("550.54.14"));
        assert_eq!(v("12.4"), v("12.4.0"));
        assert!(Version::parse("r550").is_none());
        assert!(Version::parse("").is_none());
        assert!(Version::parse("1.2.3.4.5").is_none());
    }

    #[test]
    fn globs_match_vbios_versions() {
        assert!(glob_match("96.00.*", "96.00.74.00.0B"));
        assert!(glob_match("96.00.74.00.0?", "96.00.74.00.0b"));
        assert!(!glob_match("96.00.*", "95.02.5C.00.01"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("9?", "9"));
    }
}
