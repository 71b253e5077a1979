//! Which org a WhatsApp id belongs to.
//!
//! Webhooks name a WhatsApp Business Account id (`entry[].id`), a phone number id
//! (`metadata.phone_number_id`) or a display number (`display_phone_number`); each org's config
//! lists its own. The index maps each of them to its org (and number), and refuses a
//! registration that would claim an id another org holds. Only registered orgs add entries, so
//! unknown ids create nothing.

use compact_str::CompactString;
use dashmap::DashMap;

use crate::error::ValidationError;
use crate::org::OrgConfig;

/// An id as a webhook names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRef<'a> {
    /// A WhatsApp Business Account id.
    Waba(&'a str),
    /// A phone number id.
    PhoneNumberId(&'a str),
    /// A display phone number (any formatting; only digits count).
    DisplayNumber(&'a str),
}

/// Who holds an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdOwner {
    /// The org that registered the id; a webhook naming it changes this org.
    pub org_id: String,
    /// The phone number id, when the id names a number (a webhook's display number resolves
    /// to the number it belongs to).
    pub phone_number_id: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct IdIndex {
    map: DashMap<CompactString, IdOwner>,
    /// Each org's keys in `map`, so that re-registering one org does not walk every org's ids
    /// (registering N orgs was O(N²): 10,000 orgs took seconds).
    by_org: DashMap<String, Vec<CompactString>>,
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn key(id: IdRef<'_>) -> CompactString {
    match id {
        IdRef::Waba(w) => format!("w:{w}").into(),
        IdRef::PhoneNumberId(p) => format!("p:{p}").into(),
        IdRef::DisplayNumber(d) => format!("d:{}", digits(d)).into(),
    }
}

/// Every (key, owner) an org's config claims.
fn claims(cfg: &OrgConfig) -> Vec<(CompactString, IdOwner, &'static str)> {
    let owner = |phone: Option<&str>| IdOwner {
        org_id: cfg.org_id.clone(),
        phone_number_id: phone.map(str::to_owned),
    };
    let mut out: Vec<_> = cfg
        .waba_ids
        .iter()
        .map(|w| (key(IdRef::Waba(w)), owner(None), "org.waba_ids"))
        .collect();
    for p in &cfg.phone_numbers {
        let id = Some(p.phone_number_id.as_str());
        out.push((
            key(IdRef::PhoneNumberId(&p.phone_number_id)),
            owner(id),
            "org.phone_numbers.phone_number_id",
        ));
        if !digits(&p.display_phone_number).is_empty() {
            out.push((
                key(IdRef::DisplayNumber(&p.display_phone_number)),
                owner(id),
                "org.phone_numbers.display_phone_number",
            ));
        }
    }
    out
}

impl IdIndex {
    pub(crate) fn get(&self, id: IdRef<'_>) -> Option<IdOwner> {
        self.map.get(&key(id)).map(|e| e.value().clone())
    }

    /// Checks `cfg` claims no id of another org; returns the keys the org holds now.
    pub(crate) fn check_claim(
        &self,
        cfg: &OrgConfig,
    ) -> Result<Vec<CompactString>, ValidationError> {
        for (k, _, field) in claims(cfg) {
            if let Some(owner) = self.map.get(&k)
                && owner.org_id != cfg.org_id
            {
                return Err(ValidationError::new(
                    field,
                    format!("{} already belongs to org {:?}", &k[2..], owner.org_id),
                ));
            }
        }
        Ok(self
            .by_org
            .get(&cfg.org_id)
            .map(|keys| keys.clone())
            .unwrap_or_default())
    }

    /// Replaces the org's claims (after [`Self::check_claim`] passed).
    pub(crate) fn claim(&self, cfg: &OrgConfig, old: &[CompactString]) {
        for k in old {
            self.map.remove(k);
        }
        let mut keys = Vec::new();
        for (k, owner, _) in claims(cfg) {
            keys.push(k.clone());
            self.map.insert(k, owner);
        }
        self.by_org.insert(cfg.org_id.clone(), keys);
    }
}
