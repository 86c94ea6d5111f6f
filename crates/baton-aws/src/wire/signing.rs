//! SigV4 over one [`Call`], with the settings each service expects: S3 signs its path as
//! sent (no second percent-encoding, no dot-segment normalisation) and always carries
//! `x-amz-content-sha256`; the JSON services sign the payload's hash without the header.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use bytes::Bytes;

use super::{Call, CallError, Service};

pub(super) fn signed_request(
    call: &Call,
    credentials: &Credentials,
    region: &str,
) -> Result<http::Request<Bytes>, CallError> {
    let fail = |e: &dyn std::fmt::Display| CallError::Request(format!("{}: {e}", call.operation));
    let mut settings = SigningSettings::default();
    if call.service == Service::S3 {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(call.service.signing_name())
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| fail(&e))?
        .into();
    let body = if call.sign_payload {
        SignableBody::Bytes(&call.body)
    } else {
        SignableBody::UnsignedPayload
    };
    let signable = SignableRequest::new(
        call.method.as_str(),
        call.url.as_str(),
        call.headers.iter().map(|(k, v)| (*k, v.as_str())),
        body,
    )
    .map_err(|e| fail(&e))?;
    let (instructions, _signature) = sign(signable, &params).map_err(|e| fail(&e))?.into_parts();
    let mut builder = http::Request::builder()
        .method(call.method.clone())
        .uri(call.url.as_str());
    for (name, value) in &call.headers {
        builder = builder.header(*name, value.as_str());
    }
    let mut request = builder.body(call.body.clone()).map_err(|e| fail(&e))?;
    instructions.apply_to_request_http1x(&mut request);
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use std::time::Duration;

    fn call(service: Service, sign_payload: bool) -> Call {
        Call {
            service,
            operation: "Op".into(),
            also_count: None,
            method: Method::PUT,
            url: "https://bucket.s3.eu-west-1.amazonaws.com/messages/a%40b".into(),
            headers: vec![("content-type", "text/plain".into())],
            body: Bytes::from_static(b"body"),
            sign_payload,
            hold: Duration::ZERO,
            max_answer: super::super::MAX_ANSWER,
            check_ok: None,
        }
    }

    fn header<'a>(r: &'a http::Request<Bytes>, name: &str) -> &'a str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[test]
    fn s3_requests_carry_the_payload_hash_or_unsigned_payload() {
        let creds = Credentials::new("AKID", "secret", Some("token".into()), None, "test");
        let signed =
            signed_request(&call(Service::S3, false), &creds, "eu-west-1").expect("signed");
        assert_eq!(header(&signed, "x-amz-content-sha256"), "UNSIGNED-PAYLOAD");
        assert_eq!(header(&signed, "x-amz-security-token"), "token");
        let auth = header(&signed, "authorization");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKID/")
                && auth.contains("/eu-west-1/s3/aws4_request")
                && auth.contains("content-type"),
            "{auth}"
        );
        let hashed = signed_request(&call(Service::S3, true), &creds, "eu-west-1").expect("signed");
        assert_eq!(
            header(&hashed, "x-amz-content-sha256"),
            // sha256("body")
            "230d8358dc8e8890b4c58deeb62912ee2f20357ae92a5cc861b98e68fe31acb5"
        );
    }

    #[test]
    fn json_services_sign_for_their_own_name_without_the_hash_header() {
        let creds = Credentials::new("AKID", "secret", None, None, "test");
        let mut c = call(Service::EventBridge, true);
        c.url = "https://events.eu-west-1.amazonaws.com/".into();
        let signed = signed_request(&c, &creds, "eu-west-1").expect("signed");
        assert!(header(&signed, "authorization").contains("/eu-west-1/events/aws4_request"));
        assert_eq!(header(&signed, "x-amz-content-sha256"), "");
        assert_eq!(header(&signed, "x-amz-security-token"), "");
    }
}
