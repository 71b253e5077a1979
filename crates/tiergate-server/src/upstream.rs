//! The upstream Cloud API: where `SendTemplate` forwards an allowed send.
//!
//! `POST {base}/{phone_number_id}/messages` with Cloud API's JSON body and a bearer token (the
//! org's own from the config, else `TIERGATE_UPSTREAM_TOKEN`), through one pooled client with
//! timeouts. A timeout or connection error means the send never reached WhatsApp.
//!
//! An accepted send may come back `held_for_quality_assessment` (portfolio pacing, Dec 2025):
//! Meta took it and will release it later in a batch, or drop it (then a 132015 webhook
//! follows). It went out as far as tiergate can tell, so it stays counted; the hold is reported
//! so that the org shows as under pacing review.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

/// The `message_status` of a send Meta holds under portfolio pacing.
pub const HELD_FOR_QUALITY_ASSESSMENT: &str = "held_for_quality_assessment";

/// What the upstream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamResult {
    /// Accepted; WhatsApp's message id.
    Sent {
        /// The `wamid`.
        message_id: String,
        /// Meta holds the message for quality assessment (`messages[0].message_status` is
        /// `held_for_quality_assessment`): the portfolio is being paced.
        held: bool,
    },
    /// Refused with a WhatsApp error code.
    Rejected {
        /// The code (e.g. 131056).
        code: i32,
        /// Its title or message.
        title: String,
    },
    /// Never reached WhatsApp (timeout, connection refused, a server error without a code).
    NotSent {
        /// Why.
        reason: String,
    },
}

impl UpstreamResult {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            UpstreamResult::Sent { held: false, .. } => "sent",
            UpstreamResult::Sent { held: true, .. } => "held",
            UpstreamResult::Rejected { .. } => "rejected",
            UpstreamResult::NotSent { .. } => "not_sent",
        }
    }
}

/// One template message to forward.
#[derive(Debug, Clone)]
pub struct TemplateMessage<'a> {
    /// The sending number.
    pub phone_number_id: &'a str,
    /// The send's `recipient`: a phone (WhatsApp id), a BSUID, or empty.
    pub to: &'a str,
    /// The send's `recipient_user_id` (a BSUID), if any.
    pub user_id: Option<&'a str>,
    /// The template's name.
    pub template_name: &'a str,
    /// The template's language code (`en_US`).
    pub language_code: &'a str,
    /// The template's `components` array (or `Null` for none).
    pub components: Value,
}

impl TemplateMessage<'_> {
    /// Cloud API's JSON body.
    pub fn body(&self) -> Value {
        let mut template = json!({
            "name": self.template_name,
            "language": { "code": self.language_code },
        });
        if !self.components.is_null() {
            template["components"] = self.components.clone();
        }
        let mut body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "type": "template",
            "template": template,
        });
        // Since 2026 the Cloud API takes a phone in "to" and/or a BSUID in "recipient"; a BSUID
        // a sender put where a phone goes is moved to where Meta expects it.
        let (phone, bsuid) = if tiergate_core::Bsuid::looks_like(self.to) {
            (None, Some(self.to))
        } else {
            (Some(self.to).filter(|t| !t.is_empty()), self.user_id)
        };
        if let Some(p) = phone {
            body["to"] = json!(p);
        }
        if let Some(b) = bsuid.or(self.user_id) {
            body["recipient"] = json!(b);
        }
        body
    }
}

/// The upstream client.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
    org_tokens: HashMap<String, String>,
}

impl Upstream {
    /// A client for `base` (e.g. `https://graph.facebook.com/v21.0`).
    pub fn new(
        base: &str,
        token: Option<String>,
        org_tokens: HashMap<String, String>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            token,
            org_tokens,
        })
    }

    /// Forwards one message for `org_id`.
    pub async fn send(&self, org_id: &str, msg: &TemplateMessage<'_>) -> UpstreamResult {
        let url = format!("{}/{}/messages", self.base, msg.phone_number_id);
        let mut req = self.client.post(url).json(&msg.body());
        if let Some(t) = self.org_tokens.get(org_id).or(self.token.as_ref()) {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return UpstreamResult::NotSent {
                    reason: if e.is_timeout() {
                        "upstream timed out".into()
                    } else {
                        format!("upstream unreachable: {e}")
                    },
                };
            }
        };
        let status = resp.status();
        let body: Value = match resp.json().await {
            Ok(v) => v,
            Err(e) => Value::String(format!("unreadable body: {e}")),
        };
        if status.is_success()
            && let Some(id) = body.pointer("/messages/0/id").and_then(Value::as_str)
        {
            let held = body
                .pointer("/messages/0/message_status")
                .and_then(Value::as_str)
                == Some(HELD_FOR_QUALITY_ASSESSMENT);
            return UpstreamResult::Sent {
                message_id: id.to_owned(),
                held,
            };
        }
        if let Some(code) = body
            .pointer("/error/code")
            .and_then(Value::as_i64)
            .and_then(|c| i32::try_from(c).ok())
        {
            let title = body
                .pointer("/error/error_data/details")
                .or_else(|| body.pointer("/error/message"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .chars()
                .take(512)
                .collect();
            return UpstreamResult::Rejected { code, title };
        }
        UpstreamResult::NotSent {
            reason: format!("upstream answered {status} without a WhatsApp error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_cloud_api_shaped() {
        let m = TemplateMessage {
            phone_number_id: "1",
            to: "4915112345678",
            user_id: None,
            template_name: "order_update",
            language_code: "en_US",
            components: json!([{"type": "body", "parameters": [{"type": "text", "text": "42"}]}]),
        };
        let b = m.body();
        assert_eq!(b["messaging_product"], "whatsapp");
        assert_eq!(b["type"], "template");
        assert_eq!(b["to"], "4915112345678");
        assert_eq!(b["template"]["name"], "order_update");
        assert_eq!(b["template"]["language"]["code"], "en_US");
        assert_eq!(b["template"]["components"][0]["type"], "body");
        let none = TemplateMessage {
            components: Value::Null,
            ..m
        };
        assert!(none.body()["template"].get("components").is_none());
        assert!(none.body().get("recipient").is_none());
    }

    #[test]
    fn bsuids_go_where_the_cloud_api_expects_them() {
        let m = TemplateMessage {
            phone_number_id: "1",
            to: "16505551234",
            user_id: Some("US.13491208655302741918"),
            template_name: "t",
            language_code: "en_US",
            components: Value::Null,
        };
        let both = m.body();
        assert_eq!(both["to"], "16505551234");
        assert_eq!(both["recipient"], "US.13491208655302741918");
        let only_bsuid = TemplateMessage {
            to: "",
            ..m.clone()
        }
        .body();
        assert!(only_bsuid.get("to").is_none());
        assert_eq!(only_bsuid["recipient"], "US.13491208655302741918");
        // A BSUID put where a phone goes is moved to "recipient".
        let misplaced = TemplateMessage {
            to: "US.ENT.11815799212886844830",
            user_id: None,
            ..m
        }
        .body();
        assert!(misplaced.get("to").is_none());
        assert_eq!(misplaced["recipient"], "US.ENT.11815799212886844830");
    }
}
