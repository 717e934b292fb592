//! Claim validation, after the signature has verified: times, lifetime, audience, subject,
//! type and required values. Every malformed value is a deny with a reason, never a panic:
//! numbers are range-checked before any arithmetic (jwt-attacks.md rows 27–35).

use serde_json::{Map, Value};

use crate::jose::JoseHeader;
use crate::reason::{Reason, Rejection};

/// Largest accepted NumericDate: 9999-12-31T23:59:59Z. Anything larger is not a real date and
/// would overflow date arithmetic.
const MAX_NUMERIC_DATE: i64 = 253_402_300_799;
/// Longest accepted `sub`, in bytes (it becomes an upstream header value).
const MAX_SUBJECT_BYTES: usize = 1024;

/// Which audience a token must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudienceRule {
    /// The claim (`aud`, or e.g. `client_id`) must hold at least one of the values.
    AnyOf {
        /// Claim name.
        claim: String,
        /// Accepted values, compared exactly.
        values: Vec<String>,
    },
    /// Not checked, for the documented reason.
    Skip {
        /// Why (from configuration).
        reason: String,
    },
}

/// The claim rules of one issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRules {
    /// Audience rule.
    pub audience: AudienceRule,
    /// Clock skew tolerance, seconds.
    pub clock_skew: i64,
    /// Longest accepted lifetime, seconds.
    pub max_lifetime: i64,
    /// Claims that must equal one of the listed values.
    pub required: Vec<(String, Vec<Value>)>,
    /// Accepted JOSE `typ` header values.
    pub token_types: TokenTypes,
    /// Where the subject comes from.
    pub subject: SubjectRule,
}

/// Which JOSE `typ` header values an issuer's tokens may carry. Explicit typing (RFC 8725
/// §3.11, RFC 9068 §4) is what keeps other kinds of JWT signed by the same key — security event
/// tokens, DPoP proofs, back-channel logout tokens, explicitly typed ID tokens — from passing
/// as access tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenTypes {
    /// Accepted values, normalized by [`normalize_type`].
    accepted: Vec<String>,
    /// Whether a token without `typ` is accepted.
    untyped: bool,
}

impl TokenTypes {
    /// What an access token may say: no `typ`, `JWT` (RFC 7519 §5.1) or `at+jwt` (RFC 9068
    /// §2.1).
    pub fn access_token() -> Self {
        Self {
            accepted: vec![normalize_type("JWT"), normalize_type("at+jwt")],
            untyped: true,
        }
    }

    /// [`TokenTypes::access_token`] plus `extra`: the values one provider documents for its
    /// tokens.
    pub fn access_token_or(extra: &[&str]) -> Self {
        let mut types = Self::access_token();
        types
            .accepted
            .extend(extra.iter().map(|typ| normalize_type(typ)));
        types
    }

    /// Exactly `types` (an issuer's `token_types`): a token must carry one of them.
    pub fn exactly<S: AsRef<str>>(types: &[S]) -> Self {
        Self {
            accepted: types
                .iter()
                .map(|typ| normalize_type(typ.as_ref()))
                .collect(),
            untyped: false,
        }
    }

    fn check(&self, typ: Option<&str>) -> Result<(), Rejection> {
        match typ {
            None if self.untyped => Ok(()),
            None => Err(Rejection::new(
                Reason::TokenTypeNotAllowed,
                "typ is missing and this issuer requires one",
            )),
            Some(typ)
                if self
                    .accepted
                    .iter()
                    .any(|accepted| media_subtype(typ).eq_ignore_ascii_case(accepted)) =>
            {
                Ok(())
            }
            Some(typ) => Err(Rejection::new(
                Reason::TokenTypeNotAllowed,
                format!("typ {typ:?} is not an accepted token type"),
            )),
        }
    }
}

/// Where a verified token's subject comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectRule {
    /// `sub`, which must be a non-empty string.
    Sub,
    /// `sub`; when it is the empty string, `common_name` names a service instead (Cloudflare
    /// Access service tokens).
    SubOrCommonName,
}

/// What claim validation extracts for later phases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidClaims {
    /// `sub`.
    pub subject: String,
    /// `exp`, seconds since the epoch.
    pub expires_at: i64,
}

/// Normalizes a `typ` value for comparison. It is a media type (RFC 7515 §4.1.9), so it
/// compares case-insensitively, and a value without a `/` means the same as with
/// `application/` in front of it. Nothing else is forgiven: no whitespace, no parameters.
pub fn normalize_type(typ: &str) -> String {
    media_subtype(typ).to_ascii_lowercase()
}

/// `typ` without a leading `application/` (in any case) when nothing else in it has a `/`.
pub(super) fn media_subtype(typ: &str) -> &str {
    const APPLICATION: &str = "application/";
    match (typ.get(..APPLICATION.len()), typ.get(APPLICATION.len()..)) {
        (Some(head), Some(rest))
            if head.eq_ignore_ascii_case(APPLICATION) && !rest.contains('/') =>
        {
            rest
        }
        _ => typ,
    }
}

impl ClaimRules {
    /// Checks `claims` (and the header's `typ`) at time `now` (seconds since the epoch).
    pub fn check(
        &self,
        header: &JoseHeader,
        claims: &Map<String, Value>,
        now: i64,
    ) -> Result<ValidClaims, Rejection> {
        self.token_types.check(header.typ.as_deref())?;
        let skew = self.clock_skew;

        let expires_at = numeric_date(claims, "exp")?
            .ok_or_else(|| Rejection::new(Reason::ClaimMissing, "exp is required"))?;
        if now >= expires_at.saturating_add(skew) {
            return Err(Rejection::new(
                Reason::TokenExpired,
                format!("exp {expires_at} is not after now {now} (skew {skew}s)"),
            ));
        }
        let not_before = numeric_date(claims, "nbf")?;
        if let Some(nbf) = not_before
            && nbf > now.saturating_add(skew)
        {
            return Err(Rejection::new(
                Reason::TokenNotYetValid,
                format!("nbf {nbf} is after now {now} (skew {skew}s)"),
            ));
        }
        let issued_at = numeric_date(claims, "iat")?;
        if let Some(iat) = issued_at
            && iat > now.saturating_add(skew)
        {
            return Err(Rejection::new(
                Reason::TokenIssuedInFuture,
                format!("iat {iat} is after now {now} (skew {skew}s)"),
            ));
        }
        self.check_lifetime(expires_at, issued_at.or(not_before), now)?;
        self.check_audience(claims)?;
        let subject = self.subject(claims)?;
        self.check_required(claims)?;
        Ok(ValidClaims {
            subject,
            expires_at,
        })
    }

    fn subject(&self, claims: &Map<String, Value>) -> Result<String, Rejection> {
        match (claims.get("sub"), self.subject) {
            (Some(Value::String(sub)), SubjectRule::SubOrCommonName) if sub.is_empty() => {
                match claims.get("common_name") {
                    Some(Value::String(name)) => subject_text("common_name", name),
                    Some(_) => Err(Rejection::new(
                        Reason::ClaimInvalid,
                        "common_name is not a string",
                    )),
                    None => Err(Rejection::new(
                        Reason::ClaimInvalid,
                        "sub is empty and there is no common_name",
                    )),
                }
            }
            (Some(Value::String(sub)), _) => subject_text("sub", sub),
            (Some(_), _) => Err(Rejection::new(Reason::ClaimInvalid, "sub is not a string")),
            (None, _) => Err(Rejection::new(Reason::ClaimMissing, "sub is required")),
        }
    }

    fn check_lifetime(&self, exp: i64, start: Option<i64>, now: i64) -> Result<(), Rejection> {
        let max = self.max_lifetime;
        let exceeded = |detail: String| Err(Rejection::new(Reason::TokenLifetimeExceeded, detail));
        if let Some(start) = start
            && exp.saturating_sub(start) > max
        {
            return exceeded(format!("lifetime {}s exceeds {max}s", exp - start));
        }
        // Also bound what is left, so a token without iat/nbf cannot claim a far-away exp.
        if exp.saturating_sub(now) > max.saturating_add(self.clock_skew) {
            return exceeded(format!(
                "exp is {}s away; at most {max}s is accepted",
                exp - now
            ));
        }
        Ok(())
    }

    fn check_audience(&self, claims: &Map<String, Value>) -> Result<(), Rejection> {
        let AudienceRule::AnyOf { claim, values } = &self.audience else {
            return Ok(());
        };
        let mismatch = |detail: String| Err(Rejection::new(Reason::AudienceMismatch, detail));
        match claims.get(claim) {
            None => mismatch(format!("{claim} is missing")),
            Some(Value::String(aud)) if values.contains(aud) => Ok(()),
            Some(Value::String(_)) => mismatch(format!("{claim} is not an accepted audience")),
            Some(Value::Array(items)) => {
                if !items.iter().all(Value::is_string) {
                    return Err(Rejection::new(
                        Reason::ClaimInvalid,
                        format!("{claim} holds a non-string value"),
                    ));
                }
                if items
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|aud| values.iter().any(|v| v == aud))
                {
                    Ok(())
                } else {
                    mismatch(format!("no value of {claim} is an accepted audience"))
                }
            }
            Some(_) => Err(Rejection::new(
                Reason::ClaimInvalid,
                format!("{claim} is neither a string nor an array of strings"),
            )),
        }
    }

    fn check_required(&self, claims: &Map<String, Value>) -> Result<(), Rejection> {
        for (name, accepted) in &self.required {
            match claims.get(name) {
                Some(value) if accepted.contains(value) => {}
                Some(_) => {
                    return Err(Rejection::new(
                        Reason::ClaimMismatch,
                        format!("{name} does not have an accepted value"),
                    ));
                }
                None => {
                    return Err(Rejection::new(
                        Reason::ClaimMismatch,
                        format!("{name} is required and missing"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Reads a NumericDate claim (RFC 7519 §2): a JSON number of seconds, possibly fractional,
/// between 0 and year 9999. Fractions are truncated.
pub(super) fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<i64>, Rejection> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let invalid = |why: &str| {
        Err(Rejection::new(
            Reason::ClaimInvalid,
            format!("{name} {why}"),
        ))
    };
    let Value::Number(number) = value else {
        return invalid("is not a number");
    };
    let seconds = if let Some(int) = number.as_i64() {
        int
    } else if let Some(float) = number.as_f64() {
        if !float.is_finite() || !(0.0..=MAX_NUMERIC_DATE as f64).contains(&float) {
            return invalid("is out of range");
        }
        // In range, so the truncating cast is exact in its integer part.
        float as i64
    } else {
        return invalid("is out of range");
    };
    if !(0..=MAX_NUMERIC_DATE).contains(&seconds) {
        return invalid("is out of range");
    }
    Ok(Some(seconds))
}

/// A subject as it may reach an upstream header: non-empty, bounded, no control characters.
fn subject_text(name: &str, value: &str) -> Result<String, Rejection> {
    let invalid = |why: String| Err(Rejection::new(Reason::ClaimInvalid, why));
    if value.is_empty() {
        invalid(format!("{name} is empty"))
    } else if value.len() > MAX_SUBJECT_BYTES {
        invalid(format!("{name} is longer than {MAX_SUBJECT_BYTES} bytes"))
    } else if value.chars().any(char::is_control) {
        // It becomes a header value: refuse control characters rather than forward them.
        invalid(format!("{name} contains control characters"))
    } else {
        Ok(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn rules() -> ClaimRules {
        ClaimRules {
            audience: AudienceRule::AnyOf {
                claim: "aud".into(),
                values: vec!["api://orders".into(), "orders".into()],
            },
            clock_skew: 60,
            max_lifetime: 3600,
            required: vec![],
            token_types: TokenTypes::access_token(),
            subject: SubjectRule::Sub,
        }
    }

    fn header(typ: Option<&str>) -> JoseHeader {
        JoseHeader {
            alg: "RS256".into(),
            kid: None,
            typ: typ.map(str::to_owned),
            params: Map::new(),
        }
    }

    fn claims(extra: Value) -> Map<String, Value> {
        let mut base = json!({"sub": "alice", "aud": "api://orders", "exp": NOW + 300, "iat": NOW});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base.as_object().unwrap().clone()
    }

    fn reason(r: &ClaimRules, extra: Value) -> Option<Reason> {
        r.check(&header(None), &claims(extra), NOW)
            .err()
            .map(|e| e.reason)
    }

    #[test]
    fn a_good_token_passes() {
        let ok = rules()
            .check(&header(None), &claims(json!({})), NOW)
            .unwrap();
        assert_eq!(ok.subject, "alice");
        assert_eq!(ok.expires_at, NOW + 300);
    }

    #[test]
    fn expiry_with_skew_and_boundaries() {
        let r = rules();
        assert_eq!(reason(&r, json!({"exp": null})), Some(Reason::ClaimMissing));
        assert_eq!(
            reason(&r, json!({"exp": NOW - 61, "iat": NOW - 100})),
            Some(Reason::TokenExpired)
        );
        assert_eq!(
            reason(&r, json!({"exp": NOW - 60, "iat": NOW - 100})),
            Some(Reason::TokenExpired)
        );
        assert_eq!(reason(&r, json!({"exp": NOW - 59, "iat": NOW - 100})), None);
        let strict = ClaimRules {
            clock_skew: 0,
            ..rules()
        };
        assert_eq!(
            reason(&strict, json!({"exp": NOW, "iat": NOW - 10})),
            Some(Reason::TokenExpired)
        );
        assert_eq!(
            reason(&strict, json!({"exp": NOW - 1, "iat": NOW - 10})),
            Some(Reason::TokenExpired)
        );
        assert_eq!(
            reason(&strict, json!({"exp": NOW + 1, "iat": NOW - 10})),
            None
        );
    }

    #[test]
    fn not_before_and_issued_at() {
        let r = rules();
        assert_eq!(
            reason(&r, json!({"nbf": NOW + 61})),
            Some(Reason::TokenNotYetValid)
        );
        assert_eq!(reason(&r, json!({"nbf": NOW + 60})), None);
        assert_eq!(
            reason(&r, json!({"iat": NOW + 61})),
            Some(Reason::TokenIssuedInFuture)
        );
        assert_eq!(reason(&r, json!({"iat": NOW + 60})), None);
        assert_eq!(reason(&r, json!({"iat": null})), None, "iat is optional");
    }

    #[test]
    fn lifetime_is_bounded() {
        let r = rules();
        assert_eq!(
            reason(&r, json!({"iat": NOW - 10, "exp": NOW + 3600})),
            Some(Reason::TokenLifetimeExceeded)
        );
        assert_eq!(reason(&r, json!({"iat": NOW, "exp": NOW + 3600})), None);
        assert_eq!(
            reason(&r, json!({"iat": null, "exp": NOW + 3661 + 60})),
            Some(Reason::TokenLifetimeExceeded)
        );
        assert_eq!(
            reason(&r, json!({"iat": null, "nbf": NOW - 4000, "exp": NOW + 10})),
            Some(Reason::TokenLifetimeExceeded)
        );
    }

    #[test]
    fn absurd_and_wrongly_typed_dates_are_denied_not_panics() {
        let r = rules();
        for exp in [
            json!("1800000300"),
            json!(true),
            json!([1]),
            json!(null),
            json!({}),
            json!(1e300),
            json!(18446744073709551616.0),
            json!(18446744073709551615u64),
            json!(9.3e18),
            json!(-1),
            json!(-0.5),
            json!(253402300800i64),
        ] {
            let got = r.check(
                &header(None),
                &{
                    let mut c = claims(json!({}));
                    c.insert("exp".into(), exp.clone());
                    c
                },
                NOW,
            );
            let reason = got.err().map(|e| e.reason);
            assert!(
                matches!(
                    reason,
                    Some(Reason::ClaimInvalid)
                        | Some(Reason::ClaimMissing)
                        | Some(Reason::TokenExpired)
                ),
                "exp {exp}: {reason:?}"
            );
        }
        for name in ["nbf", "iat"] {
            for v in [json!(1e300), json!("x"), json!(-5)] {
                assert_eq!(
                    reason(&r, json!({ name: v })),
                    Some(Reason::ClaimInvalid),
                    "{name} {v}"
                );
            }
        }
        // A fractional date is fine.
        assert_eq!(
            reason(
                &r,
                json!({"exp": (NOW + 300) as f64 + 0.5, "iat": NOW as f64 + 0.25})
            ),
            None
        );
    }

    #[test]
    fn audience_rules() {
        let r = rules();
        assert_eq!(
            reason(&r, json!({"aud": null})),
            Some(Reason::AudienceMismatch)
        );
        assert_eq!(
            reason(&r, json!({"aud": "api://other"})),
            Some(Reason::AudienceMismatch)
        );
        assert_eq!(
            reason(&r, json!({"aud": "api://orders "})),
            Some(Reason::AudienceMismatch)
        );
        assert_eq!(
            reason(&r, json!({"aud": []})),
            Some(Reason::AudienceMismatch)
        );
        assert_eq!(reason(&r, json!({"aud": ["x", "orders"]})), None);
        assert_eq!(
            reason(&r, json!({"aud": ["x", 1]})),
            Some(Reason::ClaimInvalid)
        );
        assert_eq!(reason(&r, json!({"aud": 123})), Some(Reason::ClaimInvalid));
        assert_eq!(
            reason(&r, json!({"aud": {"a": "orders"}})),
            Some(Reason::ClaimInvalid)
        );

        let cognito = ClaimRules {
            audience: AudienceRule::AnyOf {
                claim: "client_id".into(),
                values: vec!["app-client".into()],
            },
            ..rules()
        };
        assert_eq!(
            reason(&cognito, json!({"aud": null, "client_id": "app-client"})),
            None
        );
        assert_eq!(
            reason(&cognito, json!({"aud": null})),
            Some(Reason::AudienceMismatch)
        );

        let skip = ClaimRules {
            audience: AudienceRule::Skip {
                reason: "test".into(),
            },
            ..rules()
        };
        assert_eq!(reason(&skip, json!({"aud": null})), None);
    }

    #[test]
    fn subject_is_required_and_header_safe() {
        let r = rules();
        assert_eq!(reason(&r, json!({"sub": null})), Some(Reason::ClaimMissing));
        assert_eq!(reason(&r, json!({"sub": 5})), Some(Reason::ClaimInvalid));
        assert_eq!(reason(&r, json!({"sub": ""})), Some(Reason::ClaimInvalid));
        assert_eq!(
            reason(&r, json!({"sub": "a\r\nx-admin: 1"})),
            Some(Reason::ClaimInvalid)
        );
        assert_eq!(
            reason(&r, json!({"sub": "x".repeat(2000)})),
            Some(Reason::ClaimInvalid)
        );
    }

    #[test]
    fn required_claim_values() {
        let r = ClaimRules {
            required: vec![("token_use".into(), vec![json!("access")])],
            ..rules()
        };
        assert_eq!(reason(&r, json!({"token_use": "access"})), None);
        assert_eq!(
            reason(&r, json!({"token_use": "id"})),
            Some(Reason::ClaimMismatch)
        );
        assert_eq!(reason(&r, json!({})), Some(Reason::ClaimMismatch));
        assert_eq!(
            reason(&r, json!({"token_use": ["access"]})),
            Some(Reason::ClaimMismatch)
        );
    }

    fn typ_reason(r: &ClaimRules, typ: Option<&str>) -> Option<Reason> {
        r.check(&header(typ), &claims(json!({})), NOW)
            .err()
            .map(|e| e.reason)
    }

    #[test]
    fn by_default_only_access_token_types_pass() {
        let r = rules();
        let denied = Some(Reason::TokenTypeNotAllowed);
        for (typ, expected) in [
            (None, None),
            (Some("JWT"), None),
            (Some("jwt"), None),
            (Some("application/jwt"), None),
            (Some("at+jwt"), None),
            (Some("at+JWT"), None),
            (Some("Application/AT+JWT"), None),
            // Other kinds of JWT that an IdP's key may sign.
            (Some("secevent+jwt"), denied),
            (Some("application/secevent+jwt"), denied),
            (Some("dpop+jwt"), denied),
            (Some("logout+jwt"), denied),
            (Some("id_token+jwt"), denied),
            (Some("JOSE"), denied),
            (Some("JOSE+JSON"), denied),
            (Some("token-introspection+jwt"), denied),
            // Not the same media type: whitespace, parameters, another top-level type, nesting.
            (Some(" JWT"), denied),
            (Some("JWT "), denied),
            (Some("application/jwt; charset=utf-8"), denied),
            (Some("text/jwt"), denied),
            (Some("application/at+jwt/x"), denied),
            (Some("application/"), denied),
            (Some(""), denied),
        ] {
            assert_eq!(typ_reason(&r, typ), expected, "{typ:?}");
        }
    }

    #[test]
    fn a_profile_widens_and_token_types_narrow() {
        let spiffe = ClaimRules {
            token_types: TokenTypes::access_token_or(&["JOSE"]),
            ..rules()
        };
        for ok in [None, Some("JWT"), Some("JOSE"), Some("jose")] {
            assert_eq!(typ_reason(&spiffe, ok), None, "{ok:?}");
        }
        assert_eq!(
            typ_reason(&spiffe, Some("dpop+jwt")),
            Some(Reason::TokenTypeNotAllowed)
        );
        let exactly = ClaimRules {
            token_types: TokenTypes::exactly(&["at+jwt"]),
            ..rules()
        };
        for ok in [
            "at+jwt",
            "at+JWT",
            "application/at+jwt",
            "Application/AT+JWT",
        ] {
            assert_eq!(typ_reason(&exactly, Some(ok)), None, "{ok}");
        }
        for bad in [Some("JWT"), Some("secevent+jwt"), Some("dpop+jwt"), None] {
            assert_eq!(
                typ_reason(&exactly, bad),
                Some(Reason::TokenTypeNotAllowed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cloudflare_service_tokens_take_the_subject_from_common_name() {
        let cloudflare = ClaimRules {
            subject: SubjectRule::SubOrCommonName,
            ..rules()
        };
        let subject = |r: &ClaimRules, extra: Value| {
            r.check(&header(None), &claims(extra), NOW)
                .map(|valid| valid.subject)
                .map_err(|e| e.reason)
        };
        assert_eq!(
            subject(&cloudflare, json!({"sub": "", "common_name": "abc.access"})),
            Ok("abc.access".to_owned())
        );
        assert_eq!(
            subject(
                &cloudflare,
                json!({"sub": "user-uuid", "common_name": "abc.access"})
            ),
            Ok("user-uuid".to_owned()),
            "a user's sub is not replaced"
        );
        for (extra, reason) in [
            (json!({"sub": ""}), Reason::ClaimInvalid),
            (json!({"sub": "", "common_name": ""}), Reason::ClaimInvalid),
            (json!({"sub": "", "common_name": 7}), Reason::ClaimInvalid),
            (
                json!({"sub": "", "common_name": "a\nb"}),
                Reason::ClaimInvalid,
            ),
            (
                json!({"sub": null, "common_name": "abc.access"}),
                Reason::ClaimMissing,
            ),
        ] {
            assert_eq!(subject(&cloudflare, extra.clone()), Err(reason), "{extra}");
        }
        assert_eq!(
            subject(&rules(), json!({"sub": "", "common_name": "abc.access"})),
            Err(Reason::ClaimInvalid),
            "other profiles keep the non-empty sub rule"
        );
    }
}
