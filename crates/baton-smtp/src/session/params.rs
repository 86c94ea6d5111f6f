//! The MAIL/RCPT parameters whose values we keep or act on, parsed by us before smtp-proto
//! sees the line: DSN values become domain types (so no control character survives), and
//! numbers must fit, since smtp-proto saturates or wraps values that overflow.

use baton_domain::{EnvId, OriginalRecipient};

use crate::reply::Reply;

/// ESMTP parameters of MAIL FROM that are ours to check.
#[derive(Debug, Default)]
pub(super) struct MailParams {
    pub envid: Option<EnvId>,
    pub size: Option<u64>,
}

#[derive(Debug, Default)]
pub(super) struct RcptParams {
    pub orcpt: Option<OriginalRecipient>,
}

/// `params` is what follows the path, CRLF included.
pub(super) fn mail_params(params: &str) -> Result<MailParams, Reply> {
    let mut out = MailParams::default();
    for (key, value) in keywords(params) {
        if key.eq_ignore_ascii_case("ENVID") {
            let v = value.ok_or_else(|| invalid("ENVID"))?;
            let id = EnvId::from_xtext(v).map_err(|e| invalid_because("ENVID", e))?;
            if out.envid.replace(id).is_some() {
                return Err(invalid("ENVID"));
            }
        } else if key.eq_ignore_ascii_case("SIZE") {
            out.size = Some(number(value, "SIZE")?);
        }
    }
    Ok(out)
}

pub(super) fn rcpt_params(params: &str) -> Result<RcptParams, Reply> {
    let mut out = RcptParams::default();
    for (key, value) in keywords(params) {
        if key.eq_ignore_ascii_case("ORCPT") {
            let v = value.ok_or_else(|| invalid("ORCPT"))?;
            let o = OriginalRecipient::from_param(v).map_err(|e| invalid_because("ORCPT", e))?;
            if out.orcpt.replace(o).is_some() {
                return Err(invalid("ORCPT"));
            }
        }
    }
    Ok(out)
}

/// A decimal number that fits in 64 bits: at most 20 digits and no overflow.
pub(super) fn number(value: Option<&str>, name: &str) -> Result<u64, Reply> {
    let v = value.ok_or_else(|| invalid(name))?;
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(name));
    }
    v.parse::<u64>().map_err(|_| {
        Reply::new(
            501,
            "5.5.4",
            format!("{name} value does not fit in 64 bits"),
        )
    })
}

/// `KEY[=VALUE]` words separated by spaces, line ending stripped.
fn keywords(params: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    params
        .trim_end_matches(['\r', '\n'])
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (w, None),
        })
}

fn invalid(name: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Invalid parameter {name}"))
}

fn invalid_because(name: &str, e: baton_domain::ParamError) -> Reply {
    Reply::new(501, "5.5.4", format!("Invalid parameter {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_values_with_controls_are_refused_with_5_5_4() {
        for p in [
            " ENVID=a+0D+0ARCPT\r\n",
            " ENVID=+00\r\n",
            " ENVID=a ENVID=b\r\n",
            " ENVID\r\n",
        ] {
            let r = mail_params(p).expect_err(p);
            assert_eq!((r.code, r.enhanced), (501, Some("5.5.4")), "{p}");
        }
        for p in [
            " ORCPT=rfc822;a+0D+0Ab\r\n",
            " ORCPT=a@b\r\n",
            " ORCPT=x;a\r\n",
        ] {
            let r = rcpt_params(p).expect_err(p);
            assert_eq!(r.code, 501, "{p}");
        }
        let ok = rcpt_params(" NOTIFY=FAILURE ORCPT=rfc822;b+2Bx@c\r\n").expect("ok");
        assert_eq!(ok.orcpt.expect("orcpt").address(), "b+x@c");
    }

    #[test]
    fn numbers_that_do_not_fit_are_refused() {
        assert_eq!(
            number(Some("18446744073709551615"), "SIZE").ok(),
            Some(u64::MAX)
        );
        for v in [
            "18446744073709551616",
            "999999999999999999999",
            "",
            "1x",
            "-1",
        ] {
            let r = number(Some(v), "SIZE").expect_err(v);
            assert_eq!((r.code, r.enhanced), (501, Some("5.5.4")), "{v}");
        }
        let r = mail_params(" SIZE=99999999999999999999999999\r\n").expect_err("overflow");
        assert_eq!(r.code, 501);
    }
}
