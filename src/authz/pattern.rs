//! `*` globs for hosts, paths, principals, subjects and claims: `*` matches any run of
//! characters (including none and including `/`); everything else matches itself.

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    parts: Vec<String>,
    exact: bool,
}

impl Glob {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Self {
        Self {
            parts: pattern.split('*').map(str::to_owned).collect(),
            exact: !pattern.contains('*'),
        }
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        if self.exact {
            return self.parts.first().is_some_and(|p| p == text);
        }
        let (Some(first), Some(last)) = (self.parts.first(), self.parts.last()) else {
            return false;
        };
        let Some(mut rest) = text.strip_prefix(first.as_str()) else {
            return false;
        };
        let middle = self.parts.get(1..self.parts.len() - 1).unwrap_or_default();
        for part in middle {
            match rest.find(part.as_str()) {
                Some(at) => rest = rest.get(at + part.len()..).unwrap_or_default(),
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last.as_str())
    }
}

/// A host pattern: exact (case-insensitive), or `*.example.com` for any subdomain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(String);

impl HostPattern {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Self {
        Self(pattern.to_ascii_lowercase())
    }

    /// Whether `host` (port already removed) matches. Compared case-insensitively in place:
    /// no copy of the host per route.
    pub fn matches(&self, host: &str) -> bool {
        match self.0.strip_prefix('*') {
            Some(suffix) => {
                host.len() > suffix.len()
                    && host
                        .as_bytes()
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix.as_bytes()))
            }
            None => host.eq_ignore_ascii_case(&self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("/healthz", "/healthz", true),
            ("/healthz", "/healthz/", false),
            ("/api/*", "/api/orders/7", true),
            ("/api/*", "/api", false),
            ("/v*/orders", "/v2/orders", true),
            ("/v*/orders", "/v2/orders/1", false),
            ("*", "", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            (
                "system:serviceaccount:payments:*",
                "system:serviceaccount:payments:api",
                true,
            ),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern} ~ {text}"
            );
        }
    }

    #[test]
    fn hosts() {
        assert!(HostPattern::new("api.example.com").matches("API.example.com"));
        assert!(HostPattern::new("*.example.com").matches("a.example.com"));
        assert!(HostPattern::new("*.example.com").matches("a.b.example.com"));
        assert!(!HostPattern::new("*.example.com").matches("example.com"));
        assert!(!HostPattern::new("*.example.com").matches("evil-example.com"));
        assert!(HostPattern::new("*.Example.com").matches("A.EXAMPLE.COM"));
        assert!(!HostPattern::new("api.example.com").matches("api.example.co"));
        assert!(!HostPattern::new("*.example.com").matches(".example.co"));
        assert!(HostPattern::new("*.example.com").matches("ä.example.com"));
        assert!(!HostPattern::new("ä.example.com").matches("Ä.example.com"));
    }
}
