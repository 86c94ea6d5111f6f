//! Rendering SES templates with Handlebars, as SES does: `{{var}}`, nested paths, `{{#if}}`,
//! `{{#each}}`, `{{#with}}`, inline partials. A missing variable renders as nothing.
//!
//! Escaping: in the HTML part `{{var}}` is HTML-escaped and `{{{var}}}` is not; the subject
//! and the text part are never HTML-escaped (they are not HTML). SES's guide says it does not
//! escape HTML content at all; we escape `{{var}}` in HTML anyway (Handlebars' own rule), so
//! recipient data cannot inject markup unless the template asks for it with `{{{ }}}`.
//!
//! Everything here is bounded, since templates and data come from tenants: template size and
//! nesting, data size and shape, rendered bytes, and the work of a rendering: every template
//! element rendered costs a unit (a path costs its segments too), charged before it runs from
//! a [`Work`] budget: each part once, each `{{#each}}` iteration its whole block (nested blocks
//! and the partials it calls included), each partial call its partial. A missing variable
//! renders nothing but still costs, so output that stays small cannot hide the work. There are no
//! helpers beyond Handlebars' built-in ones (minus `log`) and no partials other than the
//! template's own inline ones, which may not call partials themselves (so no recursion). A
//! registry is built for each rendering and holds only this template: nothing of another
//! tenant's can be reached.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{
    BlockContext, BlockParams, Context, Handlebars, Helper, HelperDef, HelperResult, JsonValue,
    Output, RenderContext, RenderError, RenderErrorReason, Renderable, Template,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// SES: a stored template is at most 500 KB (subject, text and HTML together).
pub const MAX_STORED: usize = 500 * 1024;
/// SES: an inline template (Template.TemplateContent) is at most 1 MB.
pub const MAX_INLINE: usize = 1024 * 1024;
/// SES: TemplateData is at most 262,144 characters.
pub const MAX_DATA: usize = 262_144;
/// A rendered message's parts together; SES's limit for templated mail is 10 MB.
pub const MAX_RENDERED: usize = 10 * 1024 * 1024;
/// Work units per rendering (see [`Work`]): the worst template spending them all renders in
/// about 0.15 s with a release build on a 2-core machine (measured with TestRenderEmailTemplate).
pub const MAX_WORK: usize = 1_000_000;
/// Work units for all of a SendBulkEmail request's entries together.
pub const MAX_BULK_WORK: usize = 2 * MAX_WORK;
/// Renderings at once: rendering runs on blocking threads, never on the async runtime that
/// also serves SMTP; more at once are refused (TooManyRequestsException, retried by SDKs).
const MAX_RENDERS: usize = 2;
/// Blocks and subexpressions nested deeper than this are refused before parsing (the parser
/// recurses).
pub const MAX_NESTING: usize = 32;
/// Parsing costs, for every tag, a scan from the template's start (Handlebars asks the
/// parser for each element's line and column): the byte offsets of a part's tags may add up
/// to this (about 0.25 s of parsing, release build), so many tags in a small template or a few
/// in a large one, not both.
pub const MAX_TAG_OFFSETS: usize = 100_000_000;

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
    /// What a call of each inline partial costs (the largest body of that name).
    partials: Arc<HashMap<String, usize>>,
}

/// A budget of work units, shared by the renderings it is given to (one SendBulkEmail
/// request's entries share one).
pub struct Work {
    left: AtomicUsize,
}

impl Work {
    pub fn new(units: usize) -> Arc<Self> {
        Arc::new(Work {
            left: AtomicUsize::new(units),
        })
    }

    /// Takes `units`, or fails (taking nothing) when fewer are left.
    fn charge(&self, units: usize) -> Result<(), RenderError> {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(units)
            })
            .map(|_| ())
            .map_err(|_| {
                RenderErrorReason::Other("the template needs too much work to render".into()).into()
            })
    }
}

/// Runs `job` (parsing, rendering, building) on a blocking thread, at most [`MAX_RENDERS`]
/// at once.
pub async fn off_runtime<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    static RENDERS: Semaphore = Semaphore::const_new(MAX_RENDERS);
    limited(&RENDERS, job).await
}

async fn limited<T: Send + 'static>(
    slots: &'static Semaphore,
    job: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = slots
        .try_acquire()
        .map_err(|_| ApiError::throttled("too many templates are rendering; retry later"))?;
    let outcome = tokio::task::spawn_blocking(move || {
        let outcome = job();
        drop(permit);
        outcome
    })
    .await;
    outcome.unwrap_or_else(|e| {
        tracing::error!(error = %e, "rendering task failed");
        Err(ApiError::unavailable("rendering failed; retry later"))
    })
}

/// What rendering `template` once costs, its blocks' bodies once each and every partial it
/// calls at `partials`' price (an unknown partial fails when called).
fn cost(template: &Template, partials: &HashMap<String, usize>) -> usize {
    template.elements.iter().fold(0usize, |sum, element| {
        sum.saturating_add(element_cost(element, partials))
    })
}

fn element_cost(element: &TemplateElement, partials: &HashMap<String, usize>) -> usize {
    let inner = |t: &Option<Template>| t.as_ref().map_or(0, |t| cost(t, partials));
    match element {
        TemplateElement::Expression(h)
        | TemplateElement::HtmlExpression(h)
        | TemplateElement::HelperBlock(h) => {
            let params = h
                .params
                .iter()
                .chain(h.hash.values())
                .chain([&h.name])
                .fold(0usize, |sum, p| sum.saturating_add(param_cost(p, partials)));
            params
                .saturating_add(inner(&h.template))
                .saturating_add(inner(&h.inverse))
        }
        TemplateElement::PartialExpression(d) | TemplateElement::PartialBlock(d) => {
            let called = match &d.name {
                Parameter::Name(n) => partials.get(n).copied().unwrap_or(0),
                _ => 0,
            };
            1usize
                .saturating_add(called)
                .saturating_add(inner(&d.template))
        }
        // Defining an inline partial renders nothing; calling it is charged.
        _ => 1,
    }
}

fn param_cost(p: &Parameter, partials: &HashMap<String, usize>) -> usize {
    match p {
        Parameter::Path(handlebars::Path::Relative((segments, _))) => 1 + segments.len(),
        Parameter::Subexpression(s) => element_cost(&s.element, partials),
        _ => 1,
    }
}

/// Every inline partial's cost by name (the largest of a name defined more than once).
/// Partials call no partials (see [`check_partials`]), so their bodies cost as they stand.
fn inline_partials(template: &Template, out: &mut HashMap<String, usize>) {
    for element in &template.elements {
        match element {
            TemplateElement::DecoratorBlock(d) => {
                if let (Some(Parameter::Literal(JsonValue::String(name))), Some(body)) =
                    (d.params.first(), &d.template)
                {
                    let c = cost(body, &HashMap::new());
                    let entry = out.entry(name.clone()).or_default();
                    *entry = (*entry).max(c);
                }
            }
            TemplateElement::Expression(h)
            | TemplateElement::HtmlExpression(h)
            | TemplateElement::HelperBlock(h) => {
                for t in [&h.template, &h.inverse].into_iter().flatten() {
                    inline_partials(t, out);
                }
            }
            TemplateElement::PartialBlock(d) => {
                if let Some(t) = &d.template {
                    inline_partials(t, out);
                }
            }
            _ => {}
        }
    }
}

/// Checks and compiles `content`: at most `max` bytes together, no CR/LF/NUL in the subject
/// as written, no bare CR in the text or HTML, nesting within bounds, only the template's
/// own inline partials.
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
    for (what, part) in [("Text", &content.text), ("Html", &content.html)] {
        if part.as_deref().is_some_and(|p| has_bare_cr(p.as_bytes())) {
            return Err(ApiError::bad_request(format!(
                "the template's {what} must not contain a CR that does not end a line"
            )));
        }
    }
    let one = |what: &str, source: &Option<String>| -> Result<Option<Template>, ApiError> {
        let Some(source) = source else {
            return Ok(None);
        };
        let bad = |m: String| ApiError::bad_request(format!("template {what}: {m}"));
        let (depth, offsets) = scan(source);
        if depth > MAX_NESTING {
            return Err(bad(format!("nested deeper than {MAX_NESTING} levels")));
        }
        if offsets > MAX_TAG_OFFSETS {
            return Err(bad("too many {{tags}} for its size to parse".into()));
        }
        let template = Template::compile(source).map_err(|e| bad(e.to_string()))?;
        check_partials(&template, false).map_err(bad)?;
        Ok(Some(template))
    };
    let (subject, text, html) = (
        one("Subject", &content.subject)?,
        one("Text", &content.text)?,
        one("Html", &content.html)?,
    );
    let mut partials = HashMap::new();
    for t in [&subject, &text, &html].into_iter().flatten() {
        inline_partials(t, &mut partials);
    }
    Ok(Compiled {
        subject,
        text,
        html,
        partials: Arc::new(partials),
    })
}

/// A CR not followed by LF: some servers end a line there, so it could end an SMTP line (and
/// start a smuggled command) after the relay.
pub fn has_bare_cr(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
}

/// How deeply blocks (`{{#`, `{{^`) and subexpressions (parentheses inside a mustache) nest,
/// over-counted rather than under (a `{{#` in a comment counts too); and the sum of the tags'
/// byte offsets (see [`MAX_TAG_OFFSETS`]).
fn scan(source: &str) -> (usize, usize) {
    let (mut blocks, mut parens, mut deepest) = (0usize, 0usize, 0usize);
    let mut offsets = 0usize;
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        offsets = offsets.saturating_add(source.len() - rest.len() + start);
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
    (deepest, offsets)
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

/// Renders `compiled` with `data`, spending `work`. A failure to render (an unknown helper
/// or partial, too much work or output, a subject that would span lines, a bare CR) is
/// MessageRejected, as SES refuses a message it cannot render. CPU-bound: call it through
/// [`off_runtime`].
pub fn render(
    compiled: &Compiled,
    data: &serde_json::Map<String, JsonValue>,
    work: &Arc<Work>,
) -> Result<Rendered, ApiError> {
    let mut registry = Handlebars::new();
    registry.unregister_helper("log");
    registry.register_helper(
        "each",
        Box::new(CountedEach {
            work: work.clone(),
            partials: compiled.partials.clone(),
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
        let Some(template) = registry.get_template(name) else {
            return Ok(None);
        };
        work.charge(cost(template, &compiled.partials))
            .map_err(failure)?;
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
    let (text, html) = (part("text", false)?, part("html", true)?);
    if [&text, &html]
        .into_iter()
        .flatten()
        .any(|p| has_bare_cr(p.as_bytes()))
    {
        return Err(ApiError::rejected(
            "Rendering failure: the rendered text or HTML contains a CR that does not end a line",
        ));
    }
    Ok(Rendered {
        subject,
        text,
        html,
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

/// `{{#each}}` with a budget: before it starts, a loop takes its length times its block's
/// cost from the rendering's work budget, so loops over tenant data (nested or not, with large
/// bodies or partial calls) cannot multiply without bound. Otherwise as Handlebars' own:
/// `this`, `@index`, `@key`, `@first`, `@last`, block params, `{{else}}` for an empty or
/// missing list.
struct CountedEach {
    work: Arc<Work>,
    partials: Arc<HashMap<String, usize>>,
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
        let block = cost(body, &self.partials).max(1);
        self.work.charge(items.len().saturating_mul(block))?;
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
        render(
            &compile(c, MAX_STORED)?,
            &parse_data(Some(data))?,
            &Work::new(MAX_WORK),
        )
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
        assert!(e.message.contains("too much work"), "{e}");
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

    /// The review's probes: a loop over a large body of missing variables, and a large
    /// partial called many times. As written they are refused before parsing (too many tags
    /// to parse in time); a tenth of their size parses and is refused as a rendering failure,
    /// before the work is done.
    #[test]
    fn work_counts_block_size_and_partial_calls_and_stops_fast() {
        let each = |n: usize| {
            content(
                "s",
                &format!("{{{{#each a}}}}{}{{{{/each}}}}", "{{x}}".repeat(n)),
                "h",
            )
        };
        let partial = |n: usize| {
            let text = format!(
                "{{{{#*inline \"p\"}}}}{}{{{{/inline}}}}{}",
                "{{x}}".repeat(n),
                "{{> p}}".repeat(n)
            );
            content("s", &text, "h")
        };
        let data = format!("{{\"a\":[{}]}}", vec!["0"; 200].join(","));
        let started = std::time::Instant::now();
        for probe in [each(100_000), partial(50_000)] {
            let e = compile(&probe, MAX_INLINE)
                .map(|_| ())
                .expect_err("refused");
            assert_eq!(e.kind, "BadRequestException", "{e}");
            assert!(e.message.contains("too many"), "{e}");
        }
        assert!(
            started.elapsed().as_secs_f64() < 1.0,
            "{:?}",
            started.elapsed()
        );
        for probe in [each(5_000), partial(2_500)] {
            let compiled = compile(&probe, MAX_INLINE).expect("compiles");
            let started = std::time::Instant::now();
            let e = render(
                &compiled,
                &parse_data(Some(&data)).expect("data"),
                &Work::new(MAX_WORK),
            )
            .expect_err("refused");
            assert_eq!(e.kind, "MessageRejected", "{e}");
            assert!(e.message.contains("too much work"), "{e}");
            assert!(
                started.elapsed().as_secs_f64() < 0.5,
                "{:?}",
                started.elapsed()
            );
        }
        // A partial called from a loop costs its body on every iteration.
        let looped = content(
            "s",
            &format!(
                "{{{{#*inline \"p\"}}}}{}{{{{/inline}}}}{{{{#each a}}}}{{{{> p}}}}{{{{/each}}}}",
                "{{x}}".repeat(3_000)
            ),
            "h",
        );
        let e = go(&looped, &data).expect_err("refused");
        assert!(e.message.contains("too much work"), "{e}");
        // The same loop with a small body is fine.
        let small = content("s", "{{#each a}}{{x}}{{/each}}", "h");
        assert!(go(&small, &data).is_ok());
    }

    #[test]
    fn renderings_sharing_a_budget_share_its_limit() {
        let c = content("s", &"{{x}}".repeat(1000), "h");
        let compiled = compile(&c, MAX_STORED).expect("compiles");
        let data = parse_data(None).expect("{}");
        // Each rendering costs 2,002 units (a path costs its segment too).
        let work = Work::new(7_000);
        for _ in 0..3 {
            render(&compiled, &data, &work).expect("within the budget");
        }
        assert!(render(&compiled, &data, &work).is_err());
    }

    #[test]
    fn bare_cr_in_text_or_html_is_refused_as_written_and_as_rendered() {
        let written = content("s", "a\r.\rMAIL FROM:<x@y>", "h");
        let e = compile(&written, MAX_STORED)
            .map(|_| ())
            .expect_err("refused");
        assert_eq!(e.kind, "BadRequestException");
        assert!(e.message.contains("Text"), "{e}");
        let c = content("s", "{{{t}}}", "{{{t}}}");
        let e = go(&c, r#"{"t":"a\r.\rMAIL FROM:<x@y>"}"#).expect_err("refused");
        assert_eq!(e.kind, "MessageRejected", "{e}");
        // CRLF and LF line ends are fine (mail-builder writes CRLF).
        assert!(go(&c, r#"{"t":"a\r\nb\nc"}"#).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn renderings_run_off_the_runtime_and_too_many_at_once_are_throttled() {
        // Its own slots: other tests render (through `off_runtime`) at the same time.
        static SLOTS: Semaphore = Semaphore::const_new(MAX_RENDERS);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(std::sync::Mutex::new(wait));
        let mut running = Vec::new();
        for _ in 0..MAX_RENDERS {
            let wait = wait.clone();
            running.push(tokio::spawn(limited(&SLOTS, move || {
                let _ = wait.lock().map(|w| w.recv());
                Ok(())
            })));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let e = limited(&SLOTS, || Ok(())).await.expect_err("throttled");
        assert_eq!(e.kind, "TooManyRequestsException");
        for _ in 0..MAX_RENDERS {
            release.send(()).expect("send");
        }
        for r in running {
            r.await.expect("joined").expect("ran");
        }
        limited(&SLOTS, || Ok(())).await.expect("a permit again");
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
