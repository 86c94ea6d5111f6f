//! Checking AWS Signature Version 4 on a request, with the SDK's own signer (`aws-sigv4`):
//! the request is signed again with the key's secret, over the headers the client says it
//! signed, at the time it says it signed, and the two signatures are compared in constant
//! time. The payload is always part of it (SES requests carry no unsigned payloads).

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// How far a request's time may be from ours, as AWS allows.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// The `Authorization` header, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

fn incomplete(what: &str) -> ApiError {
    ApiError::signature(
        "IncompleteSignatureException",
        format!("Authorization header: {what}"),
    )
}

/// `AWS4-HMAC-SHA256 Credential=AKID/20261202/us-east-1/ses/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=hex`.
pub fn parse_authorization(value: &str) -> Result<Authorization, ApiError> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| incomplete("only AWS4-HMAC-SHA256 is supported"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (name, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| incomplete("expected name=value parts"))?;
        match name {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => return Err(incomplete(&format!("unknown part {name:?}"))),
        }
    }
    let credential = credential.ok_or_else(|| incomplete("no Credential"))?;
    let fields: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = fields.as_slice() else {
        return Err(incomplete(
            "Credential must be KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    let signature = signature.ok_or_else(|| incomplete("no Signature"))?;
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(incomplete("Signature must be 64 hex digits"));
    }
    let signed_headers: Vec<String> = signed
        .ok_or_else(|| incomplete("no SignedHeaders"))?
        .split(';')
        .map(str::to_ascii_lowercase)
        .collect();
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(incomplete("SignedHeaders must include host"));
    }
    Ok(Authorization {
        access_key_id: access_key_id.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers,
        signature: signature.to_ascii_lowercase(),
    })
}

/// `20261202T083000Z` as a time.
fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = time::PrimitiveDateTime::parse(value, format).ok()?;
    let secs = t.assume_utc().unix_timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// The request as received.
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query, as sent.
    pub uri: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: &'a [u8],
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// The scope's service and the request's time (`X-Amz-Date`), checked before anything else
/// (the body included) is read: a stale request costs us no more than its headers.
pub fn check_time(
    auth: &Authorization,
    amz_date: Option<&str>,
    now: SystemTime,
) -> Result<SystemTime, ApiError> {
    if auth.service != "ses" {
        return Err(incomplete("the credential scope's service must be ses"));
    }
    let amz_date = amz_date.ok_or_else(|| incomplete("no X-Amz-Date header"))?;
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| incomplete("bad X-Amz-Date"))?;
    if auth.date.len() != 8 || amz_date.get(..8) != Some(auth.date.as_str()) {
        return Err(incomplete(
            "X-Amz-Date and the credential scope's date differ",
        ));
    }
    let skew = now
        .duration_since(signed_at)
        .unwrap_or_else(|e| e.duration());
    if skew > MAX_SKEW {
        return Err(ApiError::signature(
            "InvalidSignatureException",
            "Signature expired: the request time is more than 15 minutes from ours",
        ));
    }
    Ok(signed_at)
}

/// Checks `auth` (from this request) with `secret`: scope, time and signature.
pub fn verify(
    request: &Request<'_>,
    auth: &Authorization,
    secret: &str,
    now: SystemTime,
) -> Result<(), ApiError> {
    let signed_at = check_time(auth, request.header("x-amz-date"), now)?;
    // Exactly the headers the client signed, each once: another header cannot be slipped
    // in, and a signed one cannot be left out.
    let mut signed = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let values: Vec<&str> = request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect();
        match values.as_slice() {
            [value] => signed.push((name.as_str(), *value)),
            [] => return Err(incomplete(&format!("signed header {name} is missing"))),
            _ => return Err(incomplete(&format!("signed header {name} appears twice"))),
        }
    }
    let identity = aws_credential_types::Credentials::new(
        auth.access_key_id.clone(),
        secret.to_string(),
        None,
        None,
        "baton-api-key",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.excluded_headers = Some(Vec::<Cow<'static, str>>::new());
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&auth.region)
        .name(&auth.service)
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|e| incomplete(&e.to_string()))?
        .into();
    let signable = SignableRequest::new(
        request.method,
        request.uri,
        signed.into_iter(),
        SignableBody::Bytes(request.body),
    )
    .map_err(|e| incomplete(&e.to_string()))?;
    let expected = sign(signable, &params).map_err(|e| incomplete(&e.to_string()))?;
    if bool::from(
        expected
            .signature()
            .as_bytes()
            .ct_eq(auth.signature.as_bytes()),
    ) {
        Ok(())
    } else {
        Err(ApiError::signature(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_by_sdk(secret: &str, body: &[u8], at: SystemTime) -> (Vec<(String, String)>, String) {
        // Signed the way an SDK does it, with the same crate in the client's role.
        let identity =
            aws_credential_types::Credentials::new("AKIDTEST", secret, None, None, "t").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("ses")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .expect("params")
            .into();
        let headers = [
            ("host", "127.0.0.1:2580"),
            ("content-type", "application/json"),
        ];
        let signable = SignableRequest::new(
            "POST",
            "/v2/email/outbound-emails",
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .expect("signable");
        let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let mut auth = String::new();
        for (n, v) in instructions.headers() {
            if n.eq_ignore_ascii_case("authorization") {
                auth = v.to_string();
            } else {
                all.push((n.to_string(), v.to_string()));
            }
        }
        (all, auth)
    }

    fn check(
        headers: &[(String, String)],
        auth: &str,
        body: &[u8],
        secret: &str,
        now: SystemTime,
    ) -> Result<(), ApiError> {
        let request = Request {
            method: "POST",
            uri: "/v2/email/outbound-emails",
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect(),
            body,
        };
        verify(&request, &parse_authorization(auth)?, secret, now)
    }

    #[test]
    fn a_request_signed_by_the_sdk_signer_verifies_and_any_change_does_not() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let body = br#"{"FromEmailAddress":"a@acme.test"}"#;
        let (headers, auth) = signed_by_sdk("s3cret", body, at);
        assert_eq!(check(&headers, &auth, body, "s3cret", at), Ok(()));
        let wrong = check(&headers, &auth, body, "other", at).expect_err("wrong secret");
        assert_eq!(wrong.kind, "SignatureDoesNotMatch");
        let tampered = check(
            &headers,
            &auth,
            br#"{"FromEmailAddress":"b@acme.test"}"#,
            "s3cret",
            at,
        );
        assert_eq!(
            tampered.expect_err("tampered").kind,
            "SignatureDoesNotMatch"
        );
        let late = check(
            &headers,
            &auth,
            body,
            "s3cret",
            at + Duration::from_secs(16 * 60),
        );
        assert_eq!(late.expect_err("stale").kind, "InvalidSignatureException");
        let mut changed = headers.clone();
        changed
            .iter_mut()
            .find(|(n, _)| n == "host")
            .expect("host")
            .1 = "evil.test".into();
        assert!(
            check(&changed, &auth, body, "s3cret", at).is_err(),
            "signed header changed"
        );
        let mut doubled = headers.clone();
        doubled.push(("host".into(), "evil.test".into()));
        assert!(
            check(&doubled, &auth, body, "s3cret", at).is_err(),
            "signed header twice"
        );
    }

    #[test]
    fn authorization_headers_that_are_not_sigv4_are_refused() {
        assert!(parse_authorization("Basic dXNlcjpwdw==").is_err());
        assert!(parse_authorization("AWS4-HMAC-SHA256 Credential=A/20261202/us-east-1/ses/aws4_request, SignedHeaders=x-amz-date, Signature=00").is_err());
        assert!(parse_authorization("AWS4-HMAC-SHA256 Credential=A/20261202/ses/aws4_request, SignedHeaders=host, Signature=0000000000000000000000000000000000000000000000000000000000000000").is_err());
    }
}
