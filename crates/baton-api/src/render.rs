//! Rendering SES templates with Handlebars, as SES does: `{{var}}`, nested paths, `{{#if}}`,
//! `{{#each}}`, `{{#with}}`, inline partials. A missing variable renders as nothing.
//!
//! Escaping: in the HTML part `{{var}}` is HTML-escaped and `{{{var}}}` is not; the subject
//! and the text part are never HTML-escaped (they are not HTML). SES's guide says it does not
//! escape HTML content at all; we escape `{{var}}` in HTML anyway (Handlebars' own rule), so
//! recipient data cannot inject markup unless the template asks for it with `{{{ }}}`.
//!
//! Everything here is bounded, since templates and data come from tenants: template size and
//! nesting, data size and shape, total `{{#each}}` iterations, rendered bytes. There are no
//! helpers beyond Handlebars' built-in ones (minus `log`) and no partials other than the
//! template's own inline ones, which may not call partials themselves (so no recursion). A
//! registry is built for each rendering and holds only this template: nothing of another
//! tenant's can be reached.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{
    BlockContext, BlockParams, Context, Handlebars, Helper, HelperDef, HelperResult, JsonValue,
    Output, RenderContext, RenderError, RenderErrorReason, Renderable, Template,
};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// SES: a stored template is at most 500 KB (subject, text and HTML together).
pub const MAX_STORED: usize = 500 * 1024;
/// SES: an inline template (Template.TemplateContent) is at most 1 MB.
pub const MAX_INLINE: usize = 1024 * 1024;
/// SES: TemplateData is at most 262,144 characters.
pub const MAX_DATA: usize = 262_144;
/// A rendered message's parts together; SES's limit for templated mail is 10 MB.
pub const MAX_RENDERED: usize = 10 * 1024 * 1024;
/// `{{#each}}` iterations per rendering, all loops together (nested loops multiply).
pub const MAX_ITERATIONS: usize = 100_000;
/// Blocks and subexpressions nested deeper than this are refused before parsing (the parser
/// recurses).
pub const MAX_NESTING: usize = 32;

/// A template's parts, as SES's EmailTemplateContent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TemplateContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

/// A rendered template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// The three parts, compiled; an error says what is wrong (BadRequestException).
pub struct Compiled {
    subject: Option<Template>,
    text: Option<Template>,
    html: Option<Template>,
}

/// Checks and compiles `content`: at most `max` bytes together, no CR/LF/NUL in the subject
/// as written, nesting within bounds, only the template's own inline partials.
pub fn compile(content: &TemplateContent, max: usize) -> Result<Compiled, ApiError> {
    let parts = [&content.subject, &content.text, &content.html];
    let size: usize = parts
        .iter()
        .filter_map(|p| p.as_ref())
        .map(String::len)
        .sum();
    if size > max {
        return Err(ApiError::bad_request(format!(
            "the template is {size} bytes; at most {max} are allowed"
        )));
    }
    if content
        .subject
        .as_ref()
        .is_some_and(|s| s.contains(['\r', '\n', '\0']))
    {
        return Err(ApiError::bad_request(
            "the template's Subject must not contain CR, LF or NUL",
        ));
    }
    let one = |what: &str, source: &Option<String>| -> Result<Option<Template>, ApiError> {
        let Some(source) = source else {
            return Ok(None);
        };
        let bad = |m: String| ApiError::bad_request(format!("template {what}: {m}"));
        if nesting(source) > MAX_NESTING {
            return Err(bad(format!("nested deeper than {MAX_NESTING} levels")));
        }
        let template = Template::compile(source).map_err(|e| bad(e.to_string()))?;
        check_partials(&template, false).map_err(bad)?;
        Ok(Some(template))
    };
    Ok(Compiled {
        subject: one("Subject", &content.subject)?,
        text: one("Text", &content.text)?,
        html: one("Html", &content.html)?,
    })
}

/// How deeply blocks (`{{#`, `{{^`) and subexpressions (parentheses inside a mustache) nest,
/// over-counted rather than under (a `{{#` in a comment counts too).
fn nesting(source: &str) -> usize {
    let (mut blocks, mut parens, mut deepest) = (0usize, 0usize, 0usize);
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        let inner = rest[start + 2..].trim_start_matches(['{', '~']);
        let end = inner.find("}}").unwrap_or(inner.len());
        let tag = &inner[..end];
        match tag.as_bytes().first() {
            Some(b'#') => blocks += 1,
            Some(b'^') if tag.trim().len() > 1 => blocks += 1,
            Some(b'/') => blocks = blocks.saturating_sub(1),
            _ => {}
        }
        for c in tag.bytes() {
            match c {
                b'(' => parens += 1,
                b')' => parens = parens.saturating_sub(1),
                _ => {}
            }
            deepest = deepest.max(blocks + parens);
        }
        parens = 0;
        deepest = deepest.max(blocks);
        rest = &inner[end..];
    }
    deepest
}

/// Partials: only `{{> name}}` with a literal name, and not inside an inline partial's body
/// (nor a partial block's), so a partial never calls a partial: no recursion. Decorators:
/// only `*inline`.
fn check_partials(template: &Template, in_partial: bool) -> Result<(), String> {
    for element in &template.elements {
        match element {
            TemplateElement::Expression(h)
            | TemplateElement::HtmlExpression(h)
            | TemplateElement::HelperBlock(h) => {
                for t in [&h.template, &h.inverse].into_iter().flatten() {
                    check_partials(t, in_partial)?;
                }
            }
            TemplateElement::DecoratorExpression(d) | TemplateElement::DecoratorBlock(d) => {
                if !matches!(&d.name, Parameter::Name(n) if n == "inline") {
                    return Err("only the inline decorator is supported".into());
                }
                if let Some(t) = &d.template {
                    check_partials(t, true)?;
                }
            }
            TemplateElement::PartialExpression(d) | TemplateElement::PartialBlock(d) => {
                if in_partial {
                    return Err("a partial may not use partials".into());
                }
                if !matches!(d.name, Parameter::Name(_)) {
                    return Err("a partial must be named literally".into());
                }
                if let Some(t) = &d.template {
                    check_partials(t, true)?;
                }
            }
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
            // A kind this code does not know cannot be vetted.
            _ => return Err("unsupported template construct".into()),
        }
    }
    Ok(())
}

/// TemplateData: a JSON object of at most [`MAX_DATA`] characters (BadRequestException).
pub fn parse_data(data: Option<&str>) -> Result<serde_json::Map<String, JsonValue>, ApiError> {
    let data = data.unwrap_or("{}");
    if data.chars().count() > MAX_DATA {
        return Err(ApiError::bad_request(format!(
            "TemplateData is longer than {MAX_DATA} characters"
        )));
    }
    match serde_json::from_str(data) {
        Ok(JsonValue::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("TemplateData must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!(
            "TemplateData is not JSON: {e}"
        ))),
    }
}

/// Renders `compiled` with `data`. A failure to render (an unknown helper or partial, too
/// much work or output, a subject that would span lines) is MessageRejected, as SES refuses
/// a message it cannot render.
pub fn render(
    compiled: &Compiled,
    data: &serde_json::Map<String, JsonValue>,
) -> Result<Rendered, ApiError> {
    let mut registry = Handlebars::new();
    registry.unregister_helper("log");
    let iterations = Arc::new(AtomicUsize::new(0));
    registry.register_helper(
        "each",
        Box::new(CountedEach {
            iterations: iterations.clone(),
        }),
    );
    for (name, part) in [
        ("subject", &compiled.subject),
        ("text", &compiled.text),
        ("html", &compiled.html),
    ] {
        if let Some(t) = part {
            registry.register_template(name, t.clone());
        }
    }
    let context = Context::wraps(data).map_err(failure)?;
    let mut budget = MAX_RENDERED;
    let mut part = |name: &str, html: bool| -> Result<Option<String>, ApiError> {
        if registry.get_template(name).is_none() {
            return Ok(None);
        }
        if html {
            registry.register_escape_fn(handlebars::html_escape);
        } else {
            registry.register_escape_fn(handlebars::no_escape);
        }
        let mut out = Limited {
            bytes: Vec::new(),
            left: &mut budget,
        };
        registry
            .render_with_context_to_write(name, &context, &mut out)
            .map_err(failure)?;
        String::from_utf8(out.bytes)
            .map(Some)
            .map_err(|_| ApiError::rejected("Rendering failure: not UTF-8"))
    };
    let subject = part("subject", false)?.unwrap_or_default();
    if subject.contains(['\r', '\n', '\0']) {
        return Err(ApiError::rejected(
            "Rendering failure: the rendered Subject contains CR, LF or NUL",
        ));
    }
    Ok(Rendered {
        subject,
        text: part("text", false)?,
        html: part("html", true)?,
    })
}

fn failure(e: RenderError) -> ApiError {
    ApiError::rejected(format!("Rendering failure: {e}"))
}

/// Collects rendered bytes, failing once the shared budget is spent.
struct Limited<'a> {
    bytes: Vec<u8>,
    left: &'a mut usize,
}

impl Write for Limited<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > *self.left {
            return Err(std::io::Error::other(format!(
                "the rendered message is larger than {MAX_RENDERED} bytes"
            )));
        }
        *self.left -= buf.len();
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `{{#each}}` with a budget: each loop takes its length from the rendering's iteration
/// budget before it starts, so nested loops over tenant data cannot multiply without bound.
/// Otherwise as Handlebars' own: `this`, `@index`, `@key`, `@first`, `@last`, block params,
/// `{{else}}` for an empty or missing list.
struct CountedEach {
    iterations: Arc<AtomicUsize>,
}

impl HelperDef for CountedEach {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let param = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("each", 0))?;
        let Some(body) = h.template() else {
            return Ok(());
        };
        let items: Vec<(JsonValue, &JsonValue)> = match param.value() {
            JsonValue::Array(list) => list
                .iter()
                .enumerate()
                .map(|(i, v)| (JsonValue::from(i), v))
                .collect(),
            JsonValue::Object(map) => map
                .iter()
                .map(|(k, v)| (JsonValue::from(k.as_str()), v))
                .collect(),
            _ => Vec::new(),
        };
        if items.is_empty() {
            return match h.inverse() {
                Some(inverse) => inverse.render(r, ctx, rc, out),
                None => Ok(()),
            };
        }
        let spent = self.iterations.fetch_add(items.len(), Ordering::Relaxed) + items.len();
        if spent > MAX_ITERATIONS {
            return Err(RenderErrorReason::Other(format!(
                "more than {MAX_ITERATIONS} #each iterations"
            ))
            .into());
        }
        let is_object = param.value().is_object();
        let base = param.context_path();
        let mut block = BlockContext::new();
        match base {
            Some(path) => block.base_path_mut().clone_from(path),
            None => block.set_base_value(param.value().clone()),
        }
        rc.push_block(block);
        let last = items.len() - 1;
        for (i, (key, value)) in items.iter().enumerate() {
            if let Some(block) = rc.block_mut() {
                block.set_local_var("index", JsonValue::from(i));
                block.set_local_var("first", JsonValue::from(i == 0));
                block.set_local_var("last", JsonValue::from(i == last));
                if is_object {
                    block.set_local_var("key", key.clone());
                }
                // With a path, `this` is the parent's path plus the key (no copy of the
                // value); without one (a computed list), the value itself.
                match base {
                    Some(path) => {
                        let segment = key.as_str().map_or_else(|| i.to_string(), str::to_string);
                        let mut full = path.clone();
                        full.push(segment);
                        *block.base_path_mut() = full;
                    }
                    None => block.set_base_value((*value).clone()),
                }
                let mut params = BlockParams::new();
                let named = h
                    .block_param()
                    .map(|v| (v, None))
                    .or_else(|| h.block_param_pair().map(|(v, k)| (v, Some(k))));
                if let Some((value_name, key_name)) = named {
                    if base.is_some() {
                        params.add_path(value_name, Vec::new())?;
                    } else {
                        params.add_value(value_name, (*value).clone())?;
                    }
                    if let Some(key_name) = key_name {
                        params.add_value(key_name, key.clone())?;
                    }
                    block.set_block_params(params);
                }
            }
            body.render(r, ctx, rc, out)?;
        }
        rc.pop_block();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(subject: &str, text: &str, html: &str) -> TemplateContent {
        TemplateContent {
            subject: Some(subject.into()),
            text: Some(text.into()),
            html: Some(html.into()),
        }
    }

    fn go(c: &TemplateContent, data: &str) -> Result<Rendered, ApiError> {
        render(&compile(c, MAX_STORED)?, &parse_data(Some(data))?)
    }

    #[test]
    fn html_is_escaped_in_the_html_part_only_and_triple_braces_are_not() {
        let c = content("Hi {{n}}", "Dear {{n}}", "<p>{{n}}</p><div>{{{n}}}</div>");
        let r = go(&c, r#"{"n": "<b>Tom & Jerry</b>"}"#).expect("renders");
        assert_eq!(r.subject, "Hi <b>Tom & Jerry</b>");
        assert_eq!(r.text.as_deref(), Some("Dear <b>Tom & Jerry</b>"));
        assert_eq!(
            r.html.as_deref(),
            Some("<p>&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p><div><b>Tom & Jerry</b></div>")
        );
    }

    #[test]
    fn missing_variables_are_empty_and_nested_if_each_work() {
        let c = content(
            "{{missing}}x",
            "{{contact.first}}{{#if vip}} VIP{{else}} std{{/if}}:{{#each items}}[{{@index}}={{name}}{{#if @last}}.{{/if}}]{{/each}}{{#each none}}a{{else}}empty{{/each}}",
            "{{#each map as |v k|}}{{k}}={{v}};{{/each}}",
        );
        let data = r#"{"contact":{"first":"Ann"},"vip":true,"items":[{"name":"a"},{"name":"b"}],"map":{"x":1,"y":2}}"#;
        let r = go(&c, data).expect("renders");
        assert_eq!(r.subject, "x");
        assert_eq!(r.text.as_deref(), Some("Ann VIP:[0=a][1=b.]empty"));
        assert_eq!(r.html.as_deref(), Some("x=1;y=2;"));
    }

    #[test]
    fn inline_partials_work_but_cannot_recurse() {
        let ok = content(
            "s",
            "{{#*inline \"row\"}}<{{this}}>{{/inline}}{{#each xs}}{{> row}}{{/each}}",
            "h",
        );
        assert_eq!(
            go(&ok, r#"{"xs":[1,2]}"#).expect("renders").text.as_deref(),
            Some("<1><2>")
        );
        let recursive = content(
            "s",
            "{{#*inline \"a\"}}{{> b}}{{/inline}}{{#*inline \"b\"}}{{> a}}{{/inline}}{{> a}}",
            "h",
        );
        assert_eq!(
            go(&recursive, "{}").map(|_| ()).expect_err("refused").kind,
            "BadRequestException"
        );
        // A partial that is not the template's own (none are registered): a rendering failure.
        let unknown = content("s", "{{> header}}", "h");
        assert_eq!(
            go(&unknown, "{}").map(|_| ()).expect_err("refused").kind,
            "MessageRejected"
        );
    }

    #[test]
    fn a_subject_that_would_span_lines_is_a_rendering_failure() {
        let c = content("Hi {{n}}", "t", "h");
        let e = go(&c, r#"{"n":"x\r\nBcc: evil@example.org"}"#).expect_err("refused");
        assert_eq!(e.kind, "MessageRejected", "{e}");
        let e = go(&c, r#"{"n":"x\u0000"}"#).expect_err("refused");
        assert_eq!(e.kind, "MessageRejected", "{e}");
        // Written into the template itself: refused when the template is made.
        let written = content("Hi\r\nBcc: x@example.org", "t", "h");
        assert_eq!(
            compile(&written, MAX_STORED)
                .map(|_| ())
                .expect_err("refused")
                .kind,
            "BadRequestException"
        );
    }

    #[test]
    fn limits_on_template_data_and_work() {
        let big = "x".repeat(MAX_STORED);
        let e = compile(&content("s", &big, "h"), MAX_STORED).map(|_| ());
        assert_eq!(e.expect_err("refused").kind, "BadRequestException");
        for data in [
            "[1]",
            "\"s\"",
            "not json",
            &format!("{{\"a\":\"{}\"}}", "y".repeat(MAX_DATA)),
        ] {
            let e = parse_data(Some(data)).expect_err("refused");
            assert_eq!(e.kind, "BadRequestException", "{data:.20}");
        }
        // 1,000 x 1,000 nested iterations: over the budget.
        let nested = content("s", "{{#each a}}{{#each ../a}}.{{/each}}{{/each}}", "h");
        let list = format!("{{\"a\":[{}]}}", vec!["0"; 1000].join(","));
        let e = go(&nested, &list).expect_err("refused");
        assert!(e.message.contains("iterations"), "{e}");
        // Output that would grow past the limit stops.
        let wide = content("s", "{{#each a}}{{{@root.big}}}{{/each}}", "h");
        let data = format!(
            "{{\"a\":[{}],\"big\":\"{}\"}}",
            vec!["0"; 100].join(","),
            "z".repeat(200_000)
        );
        let e = go(&wide, &data).expect_err("refused");
        assert!(e.message.contains("larger than"), "{e}");
        // Nesting too deep to parse safely.
        let deep = "{{#if a}}".repeat(MAX_NESTING + 1);
        let e = compile(&content("s", &deep, "h"), MAX_STORED).map(|_| ());
        assert_eq!(e.expect_err("refused").kind, "BadRequestException");
        let parens = format!("{{{{x {}}}}}", "(a ".repeat(MAX_NESTING + 1));
        let e = compile(&content("s", &parens, "h"), MAX_STORED).map(|_| ());
        assert_eq!(e.expect_err("refused").kind, "BadRequestException");
    }

    #[test]
    fn no_log_helper_and_no_unknown_helpers() {
        let c = content("s", "{{log \"x\"}}", "h");
        assert_eq!(
            go(&c, "{}").map(|_| ()).expect_err("refused").kind,
            "MessageRejected"
        );
    }
}
