//! AWS ALB tokens (`x-amzn-oidc-data`): the load balancer signs a header that carries `iss`,
//! `exp`, `client` and `signer`, over a payload that is the identity provider's userinfo
//! answer. The header is what the load balancer vouches for, so it is the authority for those
//! claims: its `exp` governs (a payload `exp` can only make the token end earlier), and a
//! payload `iss` or `client` that says something else is refused rather than believed.
//!
//! Runs after the signature verified; the claims it settles are then checked like any token's.

use serde_json::{Map, Value};

use super::claims::numeric_date;
use crate::jose::JoseHeader;
use crate::reason::{Reason, Rejection};

/// Checks the signed header of an ALB token and writes the claims it is the authority for
/// (`iss`, `exp`, `client`) into `claims`. `signers` are the accepted load balancer ARNs. The
/// header's `iss` chose the issuer and was found to agree with any payload `iss` already.
pub(super) fn apply_signed_header(
    header: &JoseHeader,
    signers: &[String],
    claims: &mut Map<String, Value>,
) -> Result<(), Rejection> {
    let signed = &header.params;
    let iss = match signed.get("iss") {
        Some(Value::String(iss)) => iss.clone(),
        _ => {
            return Err(Rejection::new(
                Reason::IssuerUnknown,
                "the ALB token header has no iss",
            ));
        }
    };
    let signer = signed.get("signer").and_then(Value::as_str);
    if !signer.is_some_and(|signer| signers.iter().any(|accepted| accepted == signer)) {
        return Err(Rejection::new(
            Reason::ClaimMismatch,
            format!("ALB signer {signer:?} is not an accepted load balancer"),
        ));
    }

    let header_exp = numeric_date(signed, "exp")?
        .ok_or_else(|| Rejection::new(Reason::ClaimMissing, "the ALB token header has no exp"))?;
    let exp = match numeric_date(claims, "exp")? {
        Some(payload_exp) => payload_exp.min(header_exp),
        None => header_exp,
    };

    let client = match signed.get("client") {
        Some(Value::String(client)) => client,
        Some(_) => {
            return Err(Rejection::new(
                Reason::ClaimInvalid,
                "client in the ALB token header is not a string",
            ));
        }
        None => {
            return Err(Rejection::new(
                Reason::ClaimMissing,
                "the ALB token header has no client",
            ));
        }
    };
    if claims
        .get("client")
        .is_some_and(|payload| payload.as_str() != Some(client))
    {
        return Err(Rejection::new(
            Reason::ClaimMismatch,
            "client in the payload differs from client in the signed header",
        ));
    }

    claims.insert("client".to_owned(), Value::String(client.clone()));
    claims.insert("iss".to_owned(), Value::String(iss));
    claims.insert("exp".to_owned(), Value::from(exp));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ARN: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/a/1";
    const ISS: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Pool";

    fn header(extra: Value) -> JoseHeader {
        let mut params = json!({"alg": "ES256", "kid": "k", "signer": ARN, "iss": ISS,
                                "client": "client-1", "exp": 2_000});
        for (name, value) in extra.as_object().cloned().unwrap_or_default() {
            if value.is_null() {
                params.as_object_mut().unwrap().remove(&name);
            } else {
                params[name] = value;
            }
        }
        JoseHeader {
            alg: "ES256".into(),
            kid: Some("k".into()),
            typ: None,
            params: params.as_object().cloned().unwrap(),
        }
    }

    fn apply(header_extra: Value, payload: Value) -> Result<Map<String, Value>, Reason> {
        let mut claims = payload.as_object().cloned().unwrap();
        apply_signed_header(&header(header_extra), &[ARN.to_owned()], &mut claims)
            .map(|()| claims)
            .map_err(|rejection| rejection.reason)
    }

    #[test]
    fn the_header_supplies_iss_exp_and_client() {
        let claims = apply(json!({}), json!({"sub": "u", "email": "u@example.com"})).unwrap();
        assert_eq!(claims["iss"], ISS);
        assert_eq!(claims["exp"], 2_000);
        assert_eq!(claims["client"], "client-1");
        assert_eq!(claims["email"], "u@example.com");
    }

    #[test]
    fn the_earlier_exp_wins_and_the_header_exp_is_required() {
        let later = apply(json!({}), json!({"sub": "u", "exp": 9_000})).unwrap();
        assert_eq!(
            later["exp"], 2_000,
            "a later payload exp cannot extend the header's"
        );
        let earlier = apply(json!({}), json!({"sub": "u", "exp": 1_500})).unwrap();
        assert_eq!(earlier["exp"], 1_500);
        assert_eq!(
            apply(json!({"exp": null}), json!({"sub": "u", "exp": 9_000})),
            Err(Reason::ClaimMissing)
        );
        assert_eq!(
            apply(json!({"exp": "2000"}), json!({"sub": "u"})),
            Err(Reason::ClaimInvalid)
        );
        assert_eq!(
            apply(json!({}), json!({"sub": "u", "exp": "9000"})),
            Err(Reason::ClaimInvalid)
        );
    }

    #[test]
    fn a_payload_client_must_agree_with_the_header() {
        assert!(apply(json!({}), json!({"sub": "u", "client": "client-1"})).is_ok());
        assert_eq!(
            apply(json!({}), json!({"sub": "u", "client": "client-2"})),
            Err(Reason::ClaimMismatch)
        );
        assert_eq!(
            apply(json!({}), json!({"sub": "u", "client": ["client-1"]})),
            Err(Reason::ClaimMismatch)
        );
        assert_eq!(
            apply(
                json!({"client": null}),
                json!({"sub": "u", "client": "client-1"})
            ),
            Err(Reason::ClaimMissing),
            "a payload client never stands in for the header's"
        );
        assert_eq!(
            apply(json!({"client": 7}), json!({"sub": "u"})),
            Err(Reason::ClaimInvalid)
        );
    }

    #[test]
    fn only_accepted_signers_vouch() {
        assert_eq!(
            apply(
                json!({"signer": "arn:aws:elasticloadbalancing:eu-west-1:999:loadbalancer/app/x/2"}),
                json!({"sub": "u"})
            ),
            Err(Reason::ClaimMismatch)
        );
        assert_eq!(
            apply(json!({"signer": null}), json!({"sub": "u"})),
            Err(Reason::ClaimMismatch)
        );
    }
}
