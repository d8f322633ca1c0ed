//! Chat templates: the checkpoint's Jinja template rendered as transformers' `apply_chat_template` does.

use minijinja::{Environment, Error, ErrorKind, context};
use serde::Serialize;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template with the special-token strings it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    pub fn new(template: &str, bos_token: &str, eos_token: &str) -> Result<Self, Error> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", template.to_string())?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// The template of a model file's tokenizer section, with its BOS and EOS token texts; `None`
    /// when the file has no chat template.
    pub fn for_model(
        info: Option<&bitnet_format::TokenizerInfo>,
        tok: &crate::tokenizer::Tokenizer,
    ) -> Result<Option<Self>, Error> {
        let Some(template) = info.and_then(|i| i.chat_template.as_deref()) else {
            return Ok(None);
        };
        let text_of = |id: Option<u32>| id.and_then(|id| tok.token_text(id)).unwrap_or_default();
        ChatTemplate::new(
            template,
            &text_of(tok.bos()),
            &text_of(tok.eos().first().copied()),
        )
        .map(Some)
    }

    /// The prompt text for `messages`, ending with the assistant's cue if `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        self.env.get_template("chat")?.render(context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
    }
}
