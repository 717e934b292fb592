//! Credential extraction: find the one token a request carries.
//!
//! Looks in every configured location (a header, optionally after a prefix such as `Bearer `,
//! or a cookie). Exactly one distinct token may be found; the same token in two places (a
//! Cloudflare header and its cookie) counts once. Envoy joins repeated headers with `,`
//! (jwt-attacks.md row 41), so a header value whose comma-separated pieces are each a
//! credential of their own is several credentials; a value with a comma that is not (a JWS in
//! JSON serialization, an unencoded payload) is one malformed token, for verification to refuse.
//! Depends on [`crate::config`] (location schema) and [`crate::reason`].

use std::borrow::Cow;

use crate::config::TokenLocation;
use crate::reason::{Reason, Rejection};

/// At most this many distinct token locations across all issuers (one bit each).
pub const MAX_LOCATIONS: usize = 64;

/// A set of locations, one bit per configured location.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocationSet(u64);

impl LocationSet {
    /// The set holding only location `index` (indices ≥ 64 are never produced by
    /// [`Extractor::new`], which refuses more locations).
    pub fn single(index: usize) -> Self {
        Self(1u64.checked_shl(index as u32).unwrap_or(0))
    }

    /// Adds location `index`.
    pub fn insert(&mut self, index: usize) {
        self.0 |= Self::single(index).0;
    }

    /// True if the two sets share a location.
    pub fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
}

/// Read access to request headers by lower-case name. Repeated headers come back joined with
/// `,` exactly as Envoy's `headers` map presents them.
pub trait HeaderLookup {
    /// The value of header `name` (lower-case), if present.
    fn header(&self, name: &str) -> Option<Cow<'_, str>>;
}

/// The credential found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential<'r> {
    /// The token text, exactly as sent (after the prefix).
    pub token: Cow<'r, str>,
    /// Every location it was found in.
    pub locations: LocationSet,
    /// The header it came from, if any (so it can be removed before the request goes upstream).
    pub header: Option<&'r str>,
    /// The cookie it came in, if any (likewise).
    pub cookie: Option<&'r str>,
}

#[derive(Debug, Clone)]
enum Location {
    Header {
        name: String,
        prefix: Option<String>,
    },
    Cookie {
        name: String,
    },
}

/// Finds credentials in the configured locations.
#[derive(Debug, Clone)]
pub struct Extractor {
    locations: Vec<Location>,
}

impl Extractor {
    /// An extractor for `locations` (already validated and de-duplicated; at most
    /// [`MAX_LOCATIONS`]). Location `i` of the slice is bit `i` of a [`LocationSet`].
    pub fn new(locations: &[TokenLocation]) -> Self {
        let locations = locations
            .iter()
            .take(MAX_LOCATIONS)
            .filter_map(|loc| match (&loc.header, &loc.cookie) {
                (Some(name), _) => Some(Location::Header {
                    name: name.to_ascii_lowercase(),
                    prefix: loc.prefix.clone().filter(|p| !p.is_empty()),
                }),
                (None, Some(name)) => Some(Location::Cookie { name: name.clone() }),
                (None, None) => None,
            })
            .collect();
        Self { locations }
    }

    /// The one credential in the request, `Ok(None)` when there is none, or a rejection when
    /// there are several.
    pub fn extract<'r>(
        &'r self,
        headers: &'r impl HeaderLookup,
    ) -> Result<Option<Credential<'r>>, Rejection> {
        let mut found: Option<Credential<'r>> = None;
        for (index, location) in self.locations.iter().enumerate() {
            let (token, header, cookie) = match location {
                Location::Header { name, prefix } => {
                    match header_token(headers, name, prefix.as_deref())? {
                        Some(token) => (token, Some(name.as_str()), None),
                        None => continue,
                    }
                }
                Location::Cookie { name } => match cookie_token(headers, name)? {
                    Some(token) => (token, None, Some(name.as_str())),
                    None => continue,
                },
            };
            match &mut found {
                None => {
                    found = Some(Credential {
                        token,
                        locations: LocationSet::single(index),
                        header,
                        cookie,
                    });
                }
                Some(existing) if existing.token == token => {
                    existing.locations.insert(index);
                    existing.header = existing.header.or(header);
                    existing.cookie = existing.cookie.or(cookie);
                }
                Some(_) => {
                    return Err(ambiguous("different tokens in two configured locations"));
                }
            }
        }
        Ok(found)
    }
}

fn ambiguous(detail: &str) -> Rejection {
    Rejection::new(Reason::CredentialAmbiguous, detail)
}

fn header_token<'r>(
    headers: &'r impl HeaderLookup,
    name: &str,
    prefix: Option<&str>,
) -> Result<Option<Cow<'r, str>>, Rejection> {
    let Some(value) = headers.header(name) else {
        return Ok(None);
    };
    if let Some(pieces) = several_credentials(&value, prefix) {
        // Ours if any of them is: `Basic …,Bearer …` is two credentials, not none.
        return if pieces.ours {
            Err(ambiguous("a token header holds several values"))
        } else {
            Ok(None)
        };
    }
    let rest = match prefix {
        None => Some(0),
        Some(prefix) => value
            .get(..prefix.len())
            .filter(|head| head.eq_ignore_ascii_case(prefix))
            .map(|_| prefix.len()),
    };
    // A header without our prefix (say `Authorization: Basic …`) is not a credential for us.
    let Some(start) = rest else {
        return Ok(None);
    };
    Ok(Some(match value {
        Cow::Borrowed(v) => Cow::Borrowed(&v[start..]),
        Cow::Owned(v) => Cow::Owned(v[start..].to_owned()),
    }))
}

/// Several header values joined by `,`, and whether one of them is for this location.
struct Joined {
    ours: bool,
}

/// `value` as several header values joined by `,`: when at least two of its pieces stand as
/// credentials on their own — they start with the location's prefix, are shaped like a
/// compact JWS or JWE, or are another scheme's credentials (`Basic dXNlcg==`).
fn several_credentials(value: &str, prefix: Option<&str>) -> Option<Joined> {
    if !value.contains(',') {
        return None;
    }
    let mut credentials = 0;
    let mut ours = false;
    for piece in value
        .split(',')
        .map(|piece| piece.trim_start_matches([' ', '\t']))
    {
        let prefixed = prefix.is_some_and(|prefix| starts_with_ignore_case(piece, prefix));
        if prefixed || is_compact_shape(piece) || is_scheme_credentials(piece) {
            credentials += 1;
            ours |= prefixed || prefix.is_none();
        }
    }
    (credentials >= 2).then_some(Joined { ours })
}

/// Whether `text` starts with `prefix`, ASCII case ignored (an authentication scheme).
pub fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Three or five non-empty-headed segments of base64url, as a compact JWS or JWE is.
fn is_compact_shape(piece: &str) -> bool {
    let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let segments = piece.split('.').count();
    matches!(segments, 3 | 5)
        && !piece.starts_with('.')
        && piece.bytes().all(|b| base64url(b) || b == b'.')
}

/// `scheme SP token68` (RFC 9110 §11.3), such as `Basic dXNlcg==` or `DPoP eyJ…`.
fn is_scheme_credentials(piece: &str) -> bool {
    let Some((scheme, token)) = piece.split_once(' ') else {
        return false;
    };
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let token68 = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
    let body = token.trim_end_matches('=');
    !scheme.is_empty() && scheme.bytes().all(tchar) && !body.is_empty() && body.bytes().all(token68)
}

fn cookie_token<'r>(
    headers: &'r impl HeaderLookup,
    name: &str,
) -> Result<Option<Cow<'r, str>>, Rejection> {
    Ok(match headers.header("cookie") {
        None => None,
        Some(Cow::Borrowed(all)) => find_cookie(all, name)?.map(Cow::Borrowed),
        Some(Cow::Owned(all)) => find_cookie(&all, name)?.map(|v| Cow::Owned(v.to_owned())),
    })
}

fn find_cookie<'a>(cookies: &'a str, name: &str) -> Result<Option<&'a str>, Rejection> {
    let mut found: Option<&str> = None;
    // Cookie values cannot contain `;`, `,` or spaces (RFC 6265 §4.1.1), so both separators
    // are safe to split on; Envoy may join repeated cookie headers with either.
    for pair in cookies.split([';', ',']) {
        let Some((key, value)) = pair.trim().split_once('=') else {
            continue;
        };
        if key != name {
            continue;
        }
        let value = value.trim_matches('"');
        match found {
            Some(previous) if previous != value => {
                return Err(ambiguous("a token cookie is set more than once"));
            }
            _ => found = Some(value),
        }
    }
    Ok(found)
}

/// The `cookie` header `cookies` without the cookie `name`: `None` when no other cookie is left.
/// The rest is rewritten as `name=value` pairs joined by `; ` (RFC 6265 §4.2.1).
pub fn without_cookie(cookies: &str, name: &str) -> Option<String> {
    let rest: Vec<&str> = cookies
        .split([';', ','])
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| pair.split_once('=').is_none_or(|(key, _)| key != name))
        .collect();
    (!rest.is_empty()).then(|| rest.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<String, String>);

    impl HeaderLookup for Map {
        fn header(&self, name: &str) -> Option<Cow<'_, str>> {
            self.0.get(name).map(|v| Cow::Borrowed(v.as_str()))
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Map {
        Map(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    fn bearer_and_friends() -> Extractor {
        Extractor::new(&[
            TokenLocation::bearer(),
            TokenLocation {
                header: Some("x-goog-iap-jwt-assertion".into()),
                prefix: None,
                cookie: None,
            },
            TokenLocation {
                header: None,
                prefix: None,
                cookie: Some("CF_Authorization".into()),
            },
            TokenLocation {
                header: Some("cf-access-jwt-assertion".into()),
                prefix: None,
                cookie: None,
            },
        ])
    }

    fn token_of(ex: &Extractor, h: &Map) -> Option<(String, LocationSet)> {
        ex.extract(h)
            .unwrap()
            .map(|c| (c.token.into_owned(), c.locations))
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_the_space() {
        let ex = bearer_and_friends();
        for value in ["Bearer a.b.c", "bearer a.b.c", "BEARER a.b.c"] {
            let (token, locs) = token_of(&ex, &headers(&[("authorization", value)])).unwrap();
            assert_eq!(token, "a.b.c");
            assert_eq!(locs, LocationSet::single(0));
        }
        assert_eq!(
            token_of(&ex, &headers(&[("authorization", "Basic dXNlcg==")])),
            None
        );
        assert_eq!(
            token_of(&ex, &headers(&[("authorization", "Bearer")])),
            None
        );
        assert_eq!(token_of(&ex, &headers(&[])), None);
        // Extra whitespace is kept, so the JWS parser rejects it as malformed.
        let (token, _) = token_of(&ex, &headers(&[("authorization", "Bearer  a.b.c")])).unwrap();
        assert_eq!(token, " a.b.c");
        let (token, _) = token_of(&ex, &headers(&[("authorization", "Bearer\ta.b.c")]))
            .map(|(t, l)| (Some(t), l))
            .unwrap_or((None, LocationSet::default()));
        assert_eq!(token, None, "a tab is not the scheme separator");
    }

    #[test]
    fn comma_joined_credentials_are_ambiguous() {
        let ex = bearer_and_friends();
        for joined in [
            ("authorization", "Bearer a.b.c,Bearer x.y.z"),
            ("authorization", "Bearer a.b.c, bearer x.y.z"),
            ("authorization", "Bearer a.b.c,Basic dXNlcjpwYXNz"),
            ("authorization", "Basic dXNlcjpwYXNz,Bearer a.b.c"),
            ("authorization", "Bearer a.b.c,x.y.z"),
            ("x-goog-iap-jwt-assertion", "a.b.c,x.y.z"),
            ("x-goog-iap-jwt-assertion", "a.b.c,a.b.c.d.e"),
        ] {
            let err = ex.extract(&headers(&[joined])).unwrap_err();
            assert_eq!(err.reason, Reason::CredentialAmbiguous, "{joined:?}");
        }
    }

    #[test]
    fn one_malformed_token_with_a_comma_is_one_credential() {
        let ex = bearer_and_friends();
        for (name, value, token) in [
            // A JWS in JSON serialization.
            (
                "authorization",
                r#"Bearer {"payload":"e30","signatures":[{"protected":"e30","signature":"c2ln"}]}"#,
                r#"{"payload":"e30","signatures":[{"protected":"e30","signature":"c2ln"}]}"#,
            ),
            // An unencoded (b64: false) payload with a comma in it.
            (
                "authorization",
                "Bearer eyJhbGciOiJIUzI1NiJ9.a,b.c2ln",
                "eyJhbGciOiJIUzI1NiJ9.a,b.c2ln",
            ),
            (
                "x-goog-iap-jwt-assertion",
                "eyJhbGciOiJFUzI1NiJ9.a,b.c2ln",
                "eyJhbGciOiJFUzI1NiJ9.a,b.c2ln",
            ),
            ("authorization", "Bearer a.b.c,", "a.b.c,"),
        ] {
            let request = headers(&[(name, value)]);
            let cred = ex.extract(&request).unwrap().unwrap();
            assert_eq!(cred.token, token);
        }
    }

    #[test]
    fn provider_headers_and_cookies() {
        let ex = bearer_and_friends();
        let (t, l) = token_of(&ex, &headers(&[("x-goog-iap-jwt-assertion", "i.a.p")])).unwrap();
        assert_eq!((t.as_str(), l), ("i.a.p", LocationSet::single(1)));
        let (t, l) = token_of(
            &ex,
            &headers(&[("cookie", "theme=dark; CF_Authorization=c.f.t; other=1")]),
        )
        .unwrap();
        assert_eq!((t.as_str(), l), ("c.f.t", LocationSet::single(2)));
    }

    #[test]
    fn the_same_token_in_two_places_counts_once() {
        let ex = bearer_and_friends();
        let h = headers(&[
            ("cf-access-jwt-assertion", "c.f.t"),
            ("cookie", "CF_Authorization=c.f.t"),
        ]);
        let cred = ex.extract(&h).unwrap().unwrap();
        assert_eq!(cred.token, "c.f.t");
        assert!(cred.locations.intersects(LocationSet::single(2)));
        assert!(cred.locations.intersects(LocationSet::single(3)));
        assert_eq!(cred.header, Some("cf-access-jwt-assertion"));
    }

    #[test]
    fn different_tokens_in_two_places_are_ambiguous() {
        let ex = bearer_and_friends();
        let h = headers(&[
            ("authorization", "Bearer a.b.c"),
            ("x-goog-iap-jwt-assertion", "i.a.p"),
        ]);
        assert_eq!(
            ex.extract(&h).unwrap_err().reason,
            Reason::CredentialAmbiguous
        );
        let h = headers(&[("cookie", "CF_Authorization=a.b.c; CF_Authorization=x.y.z")]);
        assert_eq!(
            ex.extract(&h).unwrap_err().reason,
            Reason::CredentialAmbiguous
        );
    }

    #[test]
    fn location_sets() {
        let mut set = LocationSet::single(3);
        set.insert(63);
        assert!(set.intersects(LocationSet::single(63)));
        assert!(!set.intersects(LocationSet::single(0)));
        assert_eq!(LocationSet::single(64), LocationSet::default());
    }

    #[test]
    fn the_credential_cookie_is_taken_out_of_the_cookie_header() {
        assert_eq!(
            without_cookie("theme=dark; tok=abc; lang=en", "tok").as_deref(),
            Some("theme=dark; lang=en")
        );
        assert_eq!(without_cookie("tok=abc", "tok"), None);
        assert_eq!(without_cookie(" tok=abc ;  ", "tok"), None);
        assert_eq!(
            without_cookie("a=1,tok=abc, b=2", "tok").as_deref(),
            Some("a=1; b=2"),
            "Envoy may join repeated cookie headers with commas"
        );
        assert_eq!(
            without_cookie("tokx=1; tok=2", "tok").as_deref(),
            Some("tokx=1")
        );
    }
}
