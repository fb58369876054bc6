//! The model's chat template: where it is found and how it is rendered (minijinja, set up
//! like transformers' Jinja environment).

use std::path::Path;

use minijinja::{context, Environment, Error, ErrorKind, Value as JValue};
use serde_json::Value;

use super::error::ProcessingError;

/// LLaVA-1.5's conversation format, used when the model ships no chat template.
pub const LLAVA_15_FORMAT: &str = "USER: <image>\n{prompt} ASSISTANT:";

const TEMPLATE_NAME: &str = "chat";

/// Picks the template out of a `chat_template` value: a string, or a list of
/// `{"name", "template"}` entries of which "default" is taken.
fn template_from_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(entries) => entries
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|e| e.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// Reads a chat template file: `chat_template.jinja` (raw text) or `chat_template.json`
/// (`{"chat_template": ...}`).
pub fn read_template_file(path: &Path) -> Result<Option<String>, ProcessingError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProcessingError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    if path.extension().and_then(|e| e.to_str()) == Some("jinja") {
        return Ok(Some(text));
    }
    let what = path.display().to_string();
    let v: Value = serde_json::from_str(&text).map_err(|e| ProcessingError::config(&what, e))?;
    Ok(v.get("chat_template").and_then(template_from_value))
}

/// The template held by a parsed `tokenizer_config.json`, if any.
pub fn template_from_tokenizer_config(config: &Value) -> Option<String> {
    config.get("chat_template").and_then(template_from_value)
}

/// Rewrites transformers' `{% generation %}` … `{% endgeneration %}` extension tags (which
/// only mark assistant text for masks) into a plain always-true block, keeping the tags'
/// whitespace-control markers.
fn neutralise_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (lead, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, trail) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[b.len()..]),
            None => (body, ""),
        };
        match body.trim() {
            "generation" => out.push_str(&format!("{{%{lead} if true {trail}%}}")),
            "endgeneration" => out.push_str(&format!("{{%{lead} endif {trail}%}}")),
            _ => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// transformers' `strftime_now` global, for the date directives templates use
/// (%d %m %Y %y %b %B %%), in UTC.
fn strftime_now(format: String) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let name = MONTHS[(m as usize).saturating_sub(1) % 12];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// A compiled chat template with the environment transformers gives templates
/// (trim_blocks, lstrip_blocks, loop controls, Python string/dict methods, `raise_exception`,
/// `strftime_now`, `tojson`).
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl ChatTemplate {
    /// Compiles `source`.
    pub fn new(source: &str) -> Result<Self, ProcessingError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, neutralise_generation_tags(source))
            .map_err(|e| ProcessingError::Template(e.to_string()))?;
        Ok(ChatTemplate { env })
    }

    /// Renders one user turn holding the image then `prompt` as content parts
    /// (`[{"type": "image"}, {"type": "text", "text": prompt}]`, what a processor's template
    /// expects), with the generation prompt.
    pub fn render(
        &self,
        prompt: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, ProcessingError> {
        let content = JValue::from(vec![
            context! { type => "image" },
            context! { type => "text", text => prompt },
        ]);
        self.render_content(content, bos_token, eos_token)
    }

    /// Renders one user turn whose content is the plain string `text` (what a text-only
    /// tokenizer template, such as Gemma's or Qwen's, expects), with the generation prompt.
    pub fn render_text(
        &self,
        text: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, ProcessingError> {
        self.render_content(JValue::from(text), bos_token, eos_token)
    }

    fn render_content(
        &self,
        content: JValue,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, ProcessingError> {
        let messages = vec![context! { role => "user", content => content }];
        self.render_messages(messages, bos_token, eos_token)
    }

    /// Renders a conversation with the generation prompt: `history` holds the earlier
    /// (question, answer) pairs, `prompt` the new question; the image goes with the first
    /// question. With `parts`, every content is a list of parts (the image part, then text), as a
    /// processor's template expects; otherwise a plain string, the first question being
    /// `"{image_token}\n{question}"` (a text-only tokenizer template).
    pub fn render_conversation(
        &self,
        history: &[(String, String)],
        prompt: &str,
        parts: bool,
        image_token: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, ProcessingError> {
        let user = |text: &str, first: bool| {
            let content = match (parts, first) {
                (true, true) => JValue::from(vec![
                    context! { type => "image" },
                    context! { type => "text", text => text },
                ]),
                (true, false) => JValue::from(vec![context! { type => "text", text => text }]),
                (false, true) => JValue::from(format!("{image_token}\n{text}")),
                (false, false) => JValue::from(text),
            };
            context! { role => "user", content => content }
        };
        let assistant = |text: &str| {
            let content = if parts {
                JValue::from(vec![context! { type => "text", text => text }])
            } else {
                JValue::from(text)
            };
            context! { role => "assistant", content => content }
        };
        let mut messages = Vec::with_capacity(2 * history.len() + 1);
        for (k, (question, answer)) in history.iter().enumerate() {
            messages.push(user(question, k == 0));
            messages.push(assistant(answer));
        }
        messages.push(user(prompt, history.is_empty()));
        self.render_messages(messages, bos_token, eos_token)
    }

    fn render_messages(
        &self,
        messages: Vec<JValue>,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, ProcessingError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ProcessingError::Template(e.to_string()))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => bos_token,
                eos_token => eos_token,
                tools => JValue::from(()),
            })
            .map_err(|e| ProcessingError::Template(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The template of llava-hf/llava-1.5-7b-hf's `chat_template.json`.
    const LLAVA_15: &str = "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}";

    #[test]
    fn llava_15_template_renders() {
        let t = ChatTemplate::new(LLAVA_15).unwrap();
        let text = t.render("What is this?", "<s>", "</s>").unwrap();
        assert_eq!(text, "USER: <image>\nWhat is this? ASSISTANT:");
    }

    /// A Qwen2-VL-style template: namespace counters, `is string`, `in`, loop controls.
    #[test]
    fn python_style_templates_render() {
        let source = "{% set image_count = namespace(value=0) %}{% for message in messages %}\
            {% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}\
            <|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}{% else %}\
            {% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content %}\
            {% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>\
            {% elif 'text' in content %}{{ content['text'].strip() }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n\
            {% if loop.last %}{% break %}{% endif %}{% endfor %}\
            {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}{{ image_count.value | tojson }}";
        let t = ChatTemplate::new(source).unwrap();
        let text = t.render("Hi there ", "", "").unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n\
             <|vision_start|><|image_pad|><|vision_end|>Hi there<|im_end|>\n<|im_start|>assistant\n1"
        );
    }

    #[test]
    fn generation_tags_keep_whitespace_control() {
        assert_eq!(
            neutralise_generation_tags("a{%- generation %}b{% endgeneration -%}c{{ x }}"),
            "a{%- if true %}b{% endif -%}c{{ x }}"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('no images here') }}").unwrap();
        let err = t.render("x", "", "").unwrap_err().to_string();
        assert!(err.contains("no images here"), "{err}");
    }

    #[test]
    fn named_template_list_takes_default() {
        let v: Value = serde_json::from_str(
            r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
        )
        .unwrap();
        assert_eq!(template_from_tokenizer_config(&v).as_deref(), Some("D"));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
