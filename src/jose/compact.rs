//! Compact JWS framing (RFC 7515 §7.1), strictly: exactly three non-empty-where-required
//! base64url segments, canonical encoding, a JSON-object header with no duplicate members,
//! and no header parameter that would let the token pick its own key.
//!
//! The one leniency is `=` padding (AWS ALB pads its segments): a segment may end in exactly
//! the padding its length needs, and [`CompactJws::padded`] records that it did, so that
//! verification can refuse such tokens for issuers that do not send them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::json::parse_object;

/// Header parameters that name key material or change how the payload is read. A token that
/// carries any of them is refused outright: keys come only from configuration (RFC 8725 §3.10).
const FORBIDDEN_HEADER_PARAMS: [&str; 5] = ["jku", "x5u", "jwk", "x5c", "b64"];

/// Why a token could not be read as a compact JWS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Longer than the configured cap (checked before any decoding).
    #[error("token is {len} bytes; at most {max} are accepted")]
    TooLarge {
        /// Token length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Five segments: a JWE. Only signed tokens are accepted.
    #[error("token is a JWE (5 segments); only signed tokens (compact JWS) are accepted")]
    Encrypted,
    /// Not three segments.
    #[error("token has {0} dot-separated segments; a compact JWS has exactly 3")]
    SegmentCount(usize),
    /// A segment that must not be empty is empty.
    #[error("the {0} segment is empty")]
    EmptySegment(&'static str),
    /// A character outside `[A-Za-z0-9_-]`.
    #[error("the {0} segment has a character outside the base64url alphabet")]
    Alphabet(&'static str),
    /// Not canonical base64url: bad length, non-zero unused trailing bits, or `=` padding
    /// other than exactly what the length needs.
    #[error("the {part} segment is not canonical base64url: {reason}")]
    Base64 {
        /// Which segment.
        part: &'static str,
        /// Decoder message.
        reason: String,
    },
    /// Header or payload is not a duplicate-free JSON object.
    #[error("the {part} is not a valid JSON object: {reason}")]
    Json {
        /// `header` or `payload`.
        part: &'static str,
        /// Parser message.
        reason: String,
    },
    /// A required header parameter is missing or has the wrong JSON type.
    #[error("header parameter {name:?} {problem}")]
    HeaderParam {
        /// Parameter name.
        name: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A header parameter that could let the token choose its key, or nest another token.
    #[error("header parameter {0:?} is not accepted")]
    ForbiddenParam(String),
    /// `crit` is present: no extensions are supported, so any listed one is unknown.
    #[error("header lists critical extensions ({0}); none are supported")]
    Critical(String),
}

/// The protected header parameters fedauthz reads. Anything else in the header is ignored,
/// except the forbidden parameters above, which make the token invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoseHeader {
    /// `alg`, exactly as sent. It is only ever compared against what the trusted key allows.
    pub alg: String,
    /// `kid`, an opaque string used as an exact lookup key.
    pub kid: Option<String>,
    /// `typ`, checked against the issuer's allowlist when it has one.
    pub typ: Option<String>,
    /// The whole header, for issuers whose tokens carry claims there (AWS ALB puts `iss`,
    /// `exp`, `signer` and `client` in the header). Read only after the signature verified.
    pub params: Map<String, Value>,
}

/// A compact JWS split into its parts. The signature is not verified yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactJws<'a> {
    /// Parsed protected header.
    pub header: JoseHeader,
    /// `BASE64URL(header) || '.' || BASE64URL(payload)` exactly as received: what was signed.
    pub signing_input: &'a [u8],
    /// Decoded payload bytes.
    pub payload: Vec<u8>,
    /// Decoded signature bytes.
    pub signature: Vec<u8>,
    /// Whether any segment carried `=` padding (AWS ALB sends tokens that way). Verification
    /// refuses padded tokens unless their issuer explicitly allows padding; the signature
    /// always covers the segments exactly as received, padding included.
    pub padded: bool,
}

impl<'a> CompactJws<'a> {
    /// Splits and decodes `token`, refusing anything longer than `max_len` bytes before
    /// looking at it further.
    pub fn parse(token: &'a str, max_len: usize) -> Result<Self, FormatError> {
        if token.len() > max_len {
            return Err(FormatError::TooLarge {
                len: token.len(),
                max: max_len,
            });
        }
        let segments = token.split('.').count();
        let (header_b64, payload_b64, signature_b64) = match segments {
            3 => {
                let mut parts = token.splitn(3, '.');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(h), Some(p), Some(s)) => (h, p, s),
                    _ => return Err(FormatError::SegmentCount(segments)),
                }
            }
            5 => return Err(FormatError::Encrypted),
            n => return Err(FormatError::SegmentCount(n)),
        };
        // `header.payload` exactly as received (padding included): what was signed.
        let signing_input = token
            .as_bytes()
            .get(..header_b64.len() + 1 + payload_b64.len())
            .ok_or(FormatError::SegmentCount(segments))?;

        let (header_bytes, header_padded) = decode_segment("header", header_b64, false)?;
        let (payload, payload_padded) = decode_segment("payload", payload_b64, true)?;
        let (signature, signature_padded) = decode_segment("signature", signature_b64, false)?;
        let header = parse_header(&header_bytes)?;
        Ok(Self {
            header,
            signing_input,
            payload,
            signature,
            padded: header_padded || payload_padded || signature_padded,
        })
    }

    /// The payload as a JWT claims set: a duplicate-free JSON object.
    pub fn claims(&self) -> Result<Map<String, Value>, FormatError> {
        parse_object(&self.payload).map_err(|reason| FormatError::Json {
            part: "payload",
            reason,
        })
    }
}

/// Decodes one base64url segment: canonical, unpadded or with exactly the `=` padding its
/// length needs (one `=` after 3 mod 4 characters, two after 2 mod 4, none otherwise), and `=`
/// only at the end. Returns the bytes and whether padding was present.
fn decode_segment(
    part: &'static str,
    text: &str,
    may_be_empty: bool,
) -> Result<(Vec<u8>, bool), FormatError> {
    let body = text.trim_end_matches('=');
    let padding = text.len() - body.len();
    if body.is_empty() && !may_be_empty {
        return Err(FormatError::EmptySegment(part));
    }
    // The decoder refuses every byte outside the base64url alphabet, so the alphabet is only
    // scanned separately to name the error (one pass over the token on the success path).
    let alphabet = || {
        body.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if padding > 0 && padding != (4 - body.len() % 4) % 4 {
        if !alphabet() {
            return Err(FormatError::Alphabet(part));
        }
        return Err(FormatError::Base64 {
            part,
            reason: format!(
                "{padding} padding characters where the length needs {}",
                (4 - body.len() % 4) % 4
            ),
        });
    }
    match URL_SAFE_NO_PAD.decode(body) {
        Ok(bytes) => Ok((bytes, padding > 0)),
        Err(_) if !alphabet() => Err(FormatError::Alphabet(part)),
        Err(err) => Err(FormatError::Base64 {
            part,
            reason: err.to_string(),
        }),
    }
}

fn parse_header(bytes: &[u8]) -> Result<JoseHeader, FormatError> {
    let map = parse_object(bytes).map_err(|reason| FormatError::Json {
        part: "header",
        reason,
    })?;
    if let Some(crit) = map.get("crit") {
        return Err(FormatError::Critical(crit.to_string()));
    }
    if let Some(name) = FORBIDDEN_HEADER_PARAMS
        .iter()
        .find(|name| map.contains_key(**name))
    {
        return Err(FormatError::ForbiddenParam((*name).to_owned()));
    }
    // A nested JWT (RFC 7519 §5.2) would need its inner token verified too; we never do that.
    if let Some(Value::String(cty)) = map.get("cty")
        && cty.eq_ignore_ascii_case("JWT")
    {
        return Err(FormatError::ForbiddenParam("cty".to_owned()));
    }
    let alg = match map.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        Some(_) => return Err(header_param("alg", "is not a string")),
        None => return Err(header_param("alg", "is missing")),
    };
    Ok(JoseHeader {
        alg,
        kid: optional_string(&map, "kid")?,
        typ: optional_string(&map, "typ")?,
        params: map,
    })
}

fn optional_string(
    map: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, FormatError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(header_param(name, "is not a string")),
    }
}

fn header_param(name: &'static str, problem: &'static str) -> FormatError {
    FormatError::HeaderParam { name, problem }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    #[test]
    fn splits_a_well_formed_token() {
        let t = token(
            r#"{"alg":"RS256","kid":"k1","typ":"at+jwt"}"#,
            r#"{"sub":"a"}"#,
        );
        let jws = CompactJws::parse(&t, 8192).unwrap();
        assert_eq!(jws.header.alg, "RS256");
        assert_eq!(jws.header.kid.as_deref(), Some("k1"));
        assert_eq!(jws.header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(jws.signature, b"sig");
        assert_eq!(jws.claims().unwrap()["sub"], "a");
        assert_eq!(jws.signing_input, t.rsplit_once('.').unwrap().0.as_bytes());
    }

    #[test]
    fn size_is_checked_before_anything_else() {
        let t = "x".repeat(9000);
        assert_eq!(
            CompactJws::parse(&t, 8192),
            Err(FormatError::TooLarge {
                len: 9000,
                max: 8192
            })
        );
    }

    #[test]
    fn segment_counts() {
        assert_eq!(
            CompactJws::parse("a.b.c.d.e", 100),
            Err(FormatError::Encrypted)
        );
        for (t, n) in [
            ("", 1),
            ("abc", 1),
            ("a.b", 2),
            ("a.b.c.", 4),
            ("a.b.c.d", 4),
            ("a.b.c.d.e.f", 6),
        ] {
            assert_eq!(
                CompactJws::parse(t, 100),
                Err(FormatError::SegmentCount(n)),
                "{t:?}"
            );
        }
    }

    #[test]
    fn empty_header_or_signature_is_refused() {
        let h = b64(r#"{"alg":"none"}"#);
        let p = b64("{}");
        assert_eq!(
            CompactJws::parse(&format!("{h}.{p}."), 1000),
            Err(FormatError::EmptySegment("signature"))
        );
        assert_eq!(
            CompactJws::parse(&format!(".{p}.c2ln"), 1000),
            Err(FormatError::EmptySegment("header"))
        );
    }

    #[test]
    fn non_base64url_text_is_refused() {
        let good = token(r#"{"alg":"RS256"}"#, "{}");
        // (Misplaced `=` padding is covered by padded_segments_are_accepted_exactly_and_flagged.)
        for bad in [
            good.replacen('.', " .", 1),
            good.replace('c', "+"),
            format!("{}%3D", good),
            good.replacen('.', "\n.", 1),
            good.replacen('.', "{.", 1),
        ] {
            assert!(
                matches!(CompactJws::parse(&bad, 1000), Err(FormatError::Alphabet(_))),
                "{bad:?}"
            );
        }
        // Non-canonical final character: the unused bits are not zero. A 16-byte header
        // encodes to 22 characters; the last one carries 2 data bits and 4 unused bits.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let h = b64(r#"{"alg":"RS256" }"#);
        assert_eq!(h.len(), 22);
        let last = h.bytes().last().unwrap();
        let value = ALPHABET.iter().position(|&c| c == last).unwrap();
        assert_eq!(value % 16, 0, "canonical encoding has zero unused bits");
        let mut noncanonical = h[..h.len() - 1].to_owned();
        noncanonical.push(char::from(ALPHABET[value + 1]));
        let canonical = format!("{h}.{}.c2ln", b64("{}"));
        assert!(CompactJws::parse(&canonical, 1000).is_ok());
        let t = format!("{noncanonical}.{}.c2ln", b64("{}"));
        assert!(matches!(
            CompactJws::parse(&t, 1000),
            Err(FormatError::Base64 { .. })
        ));
    }

    #[test]
    fn padded_segments_are_accepted_exactly_and_flagged() {
        use base64::engine::general_purpose::URL_SAFE;
        // Header and payload lengths that need padding (16 and 17 bytes).
        let header = URL_SAFE.encode(r#"{"alg":"RS256" }"#);
        let payload = URL_SAFE.encode(r#"{"sub":"alice"  }"#);
        assert!(header.ends_with("==") && payload.ends_with('='));
        let token = format!("{header}.{payload}.c2ln");
        let jws = CompactJws::parse(&token, 1000).unwrap();
        assert!(jws.padded);
        assert_eq!(jws.signing_input, format!("{header}.{payload}").as_bytes());
        assert_eq!(jws.claims().unwrap()["sub"], "alice");
        assert!(
            !CompactJws::parse(
                &format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64("{}")),
                1000
            )
            .unwrap()
            .padded
        );

        let bad = |token: String| CompactJws::parse(&token, 1000).is_err();
        // Too much or too little padding, padding where none is needed, padding inside.
        assert!(bad(format!("{header}=.{payload}.c2ln")));
        assert!(bad(format!(
            "{}.{payload}.c2ln",
            header.trim_end_matches('=').to_owned() + "="
        )));
        assert!(bad(format!(
            "{}=.{payload}.c2ln",
            b64(r#"{"alg":"RS256"}"#)
        )));
        assert!(bad(format!("{header}.a=b.c2ln")));
        assert!(bad(format!("a=b.{payload}.c2ln")));
        assert!(bad(format!("{header}.{payload}.===")));
        assert!(bad(format!("===.{payload}.c2ln")));
        assert!(bad(format!("{header}.===.c2ln")));
        assert!(bad(format!("{header}.=.c2ln")));
        assert!(bad(format!("{header}.{payload}.c2ln=")));
        assert!(bad(format!("{header}.{payload}.c2ln====")));
        assert!(bad(format!("{header}.{payload}.c2l==")));
        assert!(bad(format!("{header}.{payload}.=c2ln")));
        assert!(bad(format!("{header}.{payload}.c2=ln")));
        // Five characters leave 1 mod 4: no padding makes that a valid length.
        assert!(bad(format!("{header}.{payload}.c2lnc===")));
        // Standard-alphabet characters stay refused even in a padded token.
        assert!(bad(format!("{header}.{payload}.c2+n")));
        assert!(bad(format!("{header}.{payload}.c2/n")));
    }

    #[test]
    fn padding_on_any_segment_is_flagged_and_signed_as_received() {
        use base64::engine::general_purpose::URL_SAFE;
        let header = b64(r#"{"alg":"ES256"}"#);
        let payload = b64(r#"{"sub":"a"}"#);
        assert!(header.len().is_multiple_of(4) && !payload.len().is_multiple_of(4));
        // An ES256 signature is 64 bytes: 86 characters and "==" when padded.
        let signature = URL_SAFE.encode([7_u8; 64]);
        assert!(signature.ends_with("=="));
        let only_signature = format!("{header}.{payload}.{signature}");
        let jws = CompactJws::parse(&only_signature, 1000).unwrap();
        assert!(jws.padded);
        assert_eq!(jws.signature, [7_u8; 64]);
        assert_eq!(jws.signing_input, format!("{header}.{payload}").as_bytes());

        let padded_payload = URL_SAFE.encode(r#"{"sub":"a"}"#);
        let token = format!("{header}.{padded_payload}.c2ln");
        let jws = CompactJws::parse(&token, 1000).unwrap();
        assert!(jws.padded);
        assert_eq!(
            jws.signing_input,
            format!("{header}.{padded_payload}").as_bytes()
        );
        assert_ne!(jws.signing_input, format!("{header}.{payload}").as_bytes());

        // Padding does not relax the canonical trailing-bits rule: "c2lw" decodes to "sip", so
        // "c2k=" is canonical ("si") and "c2l=" (non-zero unused bits) is not.
        assert!(CompactJws::parse(&format!("{header}.{payload}.c2k="), 1000).is_ok());
        assert!(matches!(
            CompactJws::parse(&format!("{header}.{payload}.c2l="), 1000),
            Err(FormatError::Base64 { .. })
        ));
        // An empty payload stays empty: no padding is needed or accepted.
        assert!(
            !CompactJws::parse(&format!("{header}..c2ln"), 1000)
                .unwrap()
                .padded
        );
        assert!(CompactJws::parse(&format!("{header}.==.c2ln"), 1000).is_err());
    }

    #[test]
    fn header_must_be_a_strict_object_with_string_alg() {
        for (header, expected) in [
            ("[]", "json"),
            ("null", "json"),
            (r#"{"alg":"RS256","alg":"none"}"#, "json"),
            ("{}", "alg"),
            (r#"{"alg":null}"#, "alg"),
            (r#"{"alg":["RS256"]}"#, "alg"),
            (r#"{"alg":"RS256","kid":7}"#, "kid"),
            (r#"{"alg":"RS256","typ":{}}"#, "typ"),
        ] {
            let err = CompactJws::parse(&token(header, "{}"), 1000).unwrap_err();
            let matches = match (&err, expected) {
                (FormatError::Json { part: "header", .. }, "json") => true,
                (FormatError::HeaderParam { name, .. }, n) => *name == n,
                _ => false,
            };
            assert!(matches, "{header}: {err:?}");
        }
    }

    #[test]
    fn key_carrying_and_critical_headers_are_refused() {
        for param in ["jku", "x5u", "jwk", "x5c", "b64"] {
            let header = format!(r#"{{"alg":"RS256","{param}":"x"}}"#);
            assert_eq!(
                CompactJws::parse(&token(&header, "{}"), 1000),
                Err(FormatError::ForbiddenParam(param.into()))
            );
        }
        for crit in [r#"["x-unknown"]"#, "[]", r#""b64""#, "[1]", r#"["exp"]"#] {
            let header = format!(r#"{{"alg":"RS256","crit":{crit}}}"#);
            assert!(matches!(
                CompactJws::parse(&token(&header, "{}"), 1000),
                Err(FormatError::Critical(_))
            ));
        }
        assert_eq!(
            CompactJws::parse(&token(r#"{"alg":"RS256","cty":"JWT"}"#, "{}"), 1000),
            Err(FormatError::ForbiddenParam("cty".into()))
        );
    }

    #[test]
    fn payload_must_be_a_strict_object_for_claims() {
        for payload in ["", "[]", "123", r#"{"sub":"a","sub":"b"}"#, r#"{"a":1}x"#] {
            let t = token(r#"{"alg":"RS256"}"#, payload);
            let jws = CompactJws::parse(&t, 1000).unwrap();
            assert!(jws.claims().is_err(), "{payload:?}");
        }
    }
}
