//! The message's author as the header section states it. One parser (mail-parser) decides
//! "which From" for the session, policy and signing, so they can never disagree.

use mail_parser::{HeaderName, MessageParser};

use crate::Domain;

/// What the header section says that the session, policy and signing act on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderFacts {
    /// How many From fields there are.
    pub from_fields: usize,
    /// The domain of each address in the From field (lower-cased), `None` for an address
    /// that is not `local@domain` with a valid domain.
    pub from_domains: Vec<Option<Domain>>,
    pub has_date: bool,
    pub has_message_id: bool,
    /// The first Subject field, decoded (RFC 2047).
    pub subject: Option<String>,
    /// How many Received fields (hops) there are.
    pub received: usize,
}

/// Why a header section has no usable author.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorError {
    #[error("Message must have exactly one From header field, found {0}")]
    FieldCount(usize),
    #[error("From header field has no valid address")]
    NoAddress,
}

impl HeaderFacts {
    /// `head` is the header section, or any prefix of the message that holds it.
    pub fn parse(head: &[u8]) -> Self {
        let mut facts = HeaderFacts::default();
        let Some(message) = MessageParser::new().parse_headers(head) else {
            return facts;
        };
        for header in message.headers() {
            match &header.name {
                HeaderName::From => {
                    facts.from_fields += 1;
                    if let Some(addresses) = header.value.as_address() {
                        facts.from_domains.extend(addresses.iter().map(|a| {
                            a.address()
                                .and_then(|a| a.rsplit_once('@'))
                                .filter(|(local, _)| !local.is_empty())
                                .and_then(|(_, d)| Domain::parse(d).ok())
                        }));
                    }
                }
                HeaderName::Date => facts.has_date = true,
                HeaderName::MessageId => facts.has_message_id = true,
                HeaderName::Received => facts.received += 1,
                HeaderName::Subject if facts.subject.is_none() => {
                    facts.subject = header.value.as_text().map(str::to_string);
                }
                _ => {}
            }
        }
        facts
    }

    /// Exactly one From field with at least one address, every address valid.
    pub fn author_check(&self) -> Result<(), AuthorError> {
        if self.from_fields != 1 {
            return Err(AuthorError::FieldCount(self.from_fields));
        }
        if self.from_domains.is_empty() || self.from_domains.iter().any(Option::is_none) {
            return Err(AuthorError::NoAddress);
        }
        Ok(())
    }

    /// The domain a DKIM signature must use to align with From (DMARC): the author's, when
    /// there is exactly one author domain.
    pub fn author_domain(&self) -> Option<&Domain> {
        self.author_check().ok()?;
        let first = self.from_domains.first()?.as_ref()?;
        self.from_domains
            .iter()
            .all(|d| d.as_ref() == Some(first))
            .then_some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(h: &str) -> HeaderFacts {
        HeaderFacts::parse(h.as_bytes())
    }

    #[test]
    fn counts_from_fields_only_in_the_header_section() {
        let f = facts(
            "Received: x\r\nFrom: a@B.example\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nFrom: body@x\r\nMessage-ID: <x@y>\r\n",
        );
        assert_eq!(f.from_fields, 1);
        assert!(f.has_date && !f.has_message_id);
        assert_eq!(
            f.author_domain().map(ToString::to_string).as_deref(),
            Some("b.example")
        );
        assert_eq!(
            facts("FROM: a@b\r\nfrom: c@d\r\n\r\n").author_check(),
            Err(AuthorError::FieldCount(2))
        );
        assert_eq!(
            facts("Subject: x\r\n\r\n").author_check(),
            Err(AuthorError::FieldCount(0))
        );
    }

    #[test]
    fn from_without_a_valid_address_has_no_author() {
        for h in [
            "From: nobody\r\n\r\n",
            "From: <>\r\n\r\n",
            "From: a@\r\n\r\n",
        ] {
            assert_eq!(facts(h).author_check(), Err(AuthorError::NoAddress), "{h}");
        }
        let two = facts("From: a@one.example, b@two.example\r\n\r\n");
        assert!(two.author_check().is_ok());
        assert_eq!(two.author_domain(), None);
    }
}
