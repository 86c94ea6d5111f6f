//! Classification rules: data, not code. The defaults are `rules.toml`, embedded at build
//! time; an operator's file has the same shape and is merged in front of them.
//!
//! ```toml
//! [[status]]            # enhanced status code rules; the most specific code wins
//! code = "*.1.1"        # C.S.D, each part digits or "*"
//! reason = "user_unknown"
//! class = "hard"        # optional: else from the code's class digit (5 hard, 4 soft)
//! text_first = false    # optional: a vague code; try the text rules before this one
//!
//! [[text]]              # diagnostic text rules; the first that matches wins
//! pattern = "(?i)mailbox (is )?full"
//! reason = "mailbox_full"
//! class = "soft"        # optional, as above
//! ```

use std::sync::LazyLock;

use regex::{Regex, RegexSet};
use serde::Deserialize;

use crate::BounceError;
use crate::report::{Class, Reason};

const DEFAULT_RULES: &str = include_str!("rules.toml");

static DEFAULTS: LazyLock<Rules> = LazyLock::new(|| {
    // The embedded file is checked by a unit test; an empty rule set is the safe fallback.
    Rules::from_toml(DEFAULT_RULES).unwrap_or_else(|_| Rules::empty())
});

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    status: Vec<StatusRuleFile>,
    #[serde(default)]
    text: Vec<TextRuleFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusRuleFile {
    code: String,
    reason: Reason,
    class: Option<Class>,
    #[serde(default)]
    text_first: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextRuleFile {
    pattern: String,
    reason: Reason,
    class: Option<Class>,
}

/// What a rule decides: a reason, and a class when the rule fixes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub reason: Reason,
    pub class: Option<Class>,
}

#[derive(Debug, Clone)]
pub(crate) struct StatusRule {
    /// Class, subject, detail; `None` is `*`.
    code: [Option<u16>; 3],
    source: String,
    pub verdict: Verdict,
    pub text_first: bool,
}

impl StatusRule {
    fn matches(&self, code: [u16; 3]) -> bool {
        self.code
            .iter()
            .zip(code)
            .all(|(want, got)| want.is_none_or(|w| w == got))
    }

    fn specificity(&self) -> usize {
        self.code.iter().filter(|part| part.is_some()).count()
    }
}

/// A compiled rule set. Cheap to share; build once.
#[derive(Debug, Clone)]
pub struct Rules {
    status: Vec<StatusRule>,
    text: Vec<TextRuleFile>,
    text_set: RegexSet,
}

impl Default for Rules {
    /// The embedded defaults (`rules.toml`).
    fn default() -> Self {
        DEFAULTS.clone()
    }
}

impl Rules {
    pub(crate) fn defaults() -> &'static Rules {
        &DEFAULTS
    }

    fn empty() -> Rules {
        Rules {
            status: Vec::new(),
            text: Vec::new(),
            text_set: RegexSet::empty(),
        }
    }

    /// Rules from a TOML document of the shape described in this module. Text patterns are
    /// regular expressions (`regex` crate syntax; add `(?i)` for case-insensitive).
    pub fn from_toml(toml: &str) -> Result<Rules, BounceError> {
        let file: RulesFile = toml::from_str(toml)?;
        let status = file
            .status
            .into_iter()
            .enumerate()
            .map(|(index, rule)| compile_status(index, rule))
            .collect::<Result<Vec<_>, _>>()?;
        for (index, rule) in file.text.iter().enumerate() {
            Regex::new(&rule.pattern).map_err(|source| BounceError::RulesPattern {
                index,
                pattern: rule.pattern.clone(),
                source,
            })?;
        }
        Rules::assemble(status, file.text)
    }

    /// These rules with `overrides` in front: its status rules replace ours for the same code
    /// and win ties of specificity; its text rules are tried before ours.
    pub fn merged(&self, overrides: &Rules) -> Rules {
        let mut status = overrides.status.clone();
        status.extend(
            self.status
                .iter()
                .filter(|ours| {
                    !overrides
                        .status
                        .iter()
                        .any(|theirs| theirs.code == ours.code)
                })
                .cloned(),
        );
        let mut text = overrides.text.clone();
        text.extend(self.text.iter().cloned());
        // Every pattern already compiled alone, so the set compiles too.
        Rules::assemble(status, text).unwrap_or_else(|_| self.clone())
    }

    fn assemble(status: Vec<StatusRule>, text: Vec<TextRuleFile>) -> Result<Rules, BounceError> {
        let text_set =
            RegexSet::new(text.iter().map(|rule| rule.pattern.as_str())).map_err(|source| {
                BounceError::RulesPattern {
                    index: 0,
                    pattern: String::from("(the set of all text patterns)"),
                    source,
                }
            })?;
        Ok(Rules {
            status,
            text,
            text_set,
        })
    }

    /// Number of status and text rules.
    pub fn len(&self) -> (usize, usize) {
        (self.status.len(), self.text.len())
    }

    /// The most specific status rule for `code` (operator rules first among equals).
    pub(crate) fn status_rule(&self, code: [u16; 3]) -> Option<&StatusRule> {
        let mut best: Option<&StatusRule> = None;
        for rule in self.status.iter().filter(|rule| rule.matches(code)) {
            if best.is_none_or(|b| rule.specificity() > b.specificity()) {
                best = Some(rule);
            }
        }
        best
    }

    /// The first text rule whose pattern matches `text`.
    pub(crate) fn text_rule(&self, text: &str) -> Option<Verdict> {
        let index = self.text_set.matches(text).iter().next()?;
        let rule = self.text.get(index)?;
        Some(Verdict {
            reason: rule.reason,
            class: rule.class,
        })
    }

    /// The status codes the rules name, as written (for documentation and tests).
    pub fn status_codes(&self) -> impl Iterator<Item = &str> {
        self.status.iter().map(|rule| rule.source.as_str())
    }
}

fn compile_status(index: usize, rule: StatusRuleFile) -> Result<StatusRule, BounceError> {
    let bad = || BounceError::RulesStatus {
        index,
        code: rule.code.clone(),
    };
    let mut parts = rule.code.split('.');
    let mut code = [None; 3];
    for slot in &mut code {
        let part = parts.next().ok_or_else(bad)?;
        *slot = match part {
            "*" => None,
            digits if !digits.is_empty() && digits.len() <= 3 => {
                Some(digits.parse::<u16>().map_err(|_| bad())?)
            }
            _ => return Err(bad()),
        };
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(StatusRule {
        code,
        source: rule.code.clone(),
        verdict: Verdict {
            reason: rule.reason,
            class: rule.class,
        },
        text_first: rule.text_first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_load() {
        let rules = Rules::from_toml(DEFAULT_RULES).expect("rules.toml loads");
        let (status, text) = rules.len();
        assert!(status > 20 && text > 10, "{status} {text}");
    }

    #[test]
    fn most_specific_status_rule_wins_and_overrides_go_first() {
        let base = Rules::from_toml(
            "[[status]]\ncode = \"*.2.*\"\nreason = \"mailbox_disabled\"\n\
             [[status]]\ncode = \"*.2.2\"\nreason = \"mailbox_full\"\n",
        )
        .expect("base");
        let rule = base.status_rule([5, 2, 2]).expect("match");
        assert_eq!(rule.verdict.reason, Reason::MailboxFull);
        assert_eq!(
            base.status_rule([5, 2, 9]).map(|r| r.verdict.reason),
            Some(Reason::MailboxDisabled)
        );
        assert!(base.status_rule([5, 1, 1]).is_none());

        let ours = Rules::from_toml(
            "[[status]]\ncode = \"*.2.2\"\nreason = \"mailbox_full\"\nclass = \"soft\"\n\
             [[text]]\npattern = \"(?i)gone fishing\"\nreason = \"mailbox_disabled\"\n",
        )
        .expect("operator");
        let merged = base.merged(&ours);
        let rule = merged.status_rule([5, 2, 2]).expect("match");
        assert_eq!(rule.verdict.class, Some(Class::Soft));
        assert_eq!(merged.len(), (2, 1));
        assert_eq!(
            merged.text_rule("he has GONE FISHING").map(|v| v.reason),
            Some(Reason::MailboxDisabled)
        );
    }

    #[test]
    fn bad_rules_are_errors() {
        assert!(matches!(
            Rules::from_toml("[[status]]\ncode = \"5.x.1\"\nreason = \"unknown\"\n"),
            Err(BounceError::RulesStatus { .. })
        ));
        assert!(matches!(
            Rules::from_toml("[[text]]\npattern = \"(\"\nreason = \"unknown\"\n"),
            Err(BounceError::RulesPattern { .. })
        ));
        assert!(matches!(
            Rules::from_toml("[[text]]\npattern = \"x\"\nreason = \"no_such_reason\"\n"),
            Err(BounceError::RulesToml(_))
        ));
        assert!(matches!(
            Rules::from_toml("[[bogus]]\n"),
            Err(BounceError::RulesToml(_))
        ));
    }
}
