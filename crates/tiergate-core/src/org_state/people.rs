//! Which ids are one person: phone numbers, business-scoped user ids (BSUIDs) and parent BSUIDs.
//!
//! Since March 2026 a send may name its recipient by phone, by BSUID, or both, and WhatsApp
//! counts one person once whichever id a send used. A send's window entry, pair-rate cell and
//! marketing blocks are keyed by one *person key*: the phone's key when the send names a phone;
//! otherwise the key a BSUID is linked to; otherwise the BSUID's own (unlinked) key.
//!
//! The org learns links from sends it allowed that named both a phone and a BSUID (or two
//! BSUIDs), from webhooks that pair them (`contacts[]`, statuses) and from `user_id_update`.
//! From then on every id of the person hits the same entry and the same cell. A link does not
//! merge entries made before it: an entry made under a BSUID alone stays until it leaves the
//! window, so for at most a day the person may count twice. That errs on the side of sending
//! less, never more, than WhatsApp allows (tiergate's interpretation; the alternative, merging,
//! could free a slot WhatsApp still counts if the link were wrong).
//!
//! Links are bounded per org (`policy.recipient_links_capacity`): beyond it a new link is not
//! learned, which again only ever counts a person twice. A link is keyed by the BSUID's 63-bit
//! key (16 bytes a link in `links.rs`, so a linked recipient stays within SPEC's 64 bytes); two
//! BSUIDs would share a link only on a 63-bit hash collision (about 1 in 10^9 for 100,000).

use crate::error::{EngineError, ValidationError};
use crate::validate::{Bsuid, RecipientKey};

use super::OrgState;

/// The ids a send (or a webhook) names for one recipient: at most a phone and two BSUIDs, held
/// as their keys (`RecipientKey` for the phone, each BSUID's 63-bit key), 0 meaning "not named".
/// 24 bytes, copied by value on the decision path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recipient {
    phone: u64,
    users: [u64; 2],
}

impl Recipient {
    /// Reads a send's `recipient` (a phone, or a BSUID put where a phone goes) and its
    /// `recipient_user_id` (a BSUID or parent BSUID). At least one must be given.
    #[inline]
    pub(crate) fn parse(recipient: &str, user_id: Option<&str>) -> Result<Self, EngineError> {
        let user_id = user_id.filter(|u| !u.is_empty());
        if user_id.is_none() && !Bsuid::looks_like(recipient) {
            // The common case: a phone alone (an empty one is refused by its parser).
            let phone = RecipientKey::parse(recipient)?;
            return Ok(Recipient {
                phone: phone.0,
                users: [0, 0],
            });
        }
        Self::parse_with_bsuids(recipient, user_id)
    }

    #[cold]
    fn parse_with_bsuids(recipient: &str, user_id: Option<&str>) -> Result<Self, EngineError> {
        let mut to = Recipient {
            phone: 0,
            users: [0, 0],
        };
        if recipient.is_empty() {
            if user_id.is_none() {
                return Err(ValidationError::new(
                    "recipient",
                    "must not be empty (give a phone in recipient, a BSUID in \
                     recipient_user_id, or both)",
                )
                .into());
            }
        } else if Bsuid::looks_like(recipient) {
            to.users[0] = Bsuid::parse("recipient", recipient)?.unlinked_key().0;
        } else {
            to.phone = RecipientKey::parse(recipient)?.0;
        }
        if let Some(u) = user_id {
            let key = Bsuid::parse("recipient_user_id", u)?.unlinked_key().0;
            let free = usize::from(to.users[0] != 0);
            to.users[free] = key;
        }
        Ok(to)
    }

    /// A recipient known only by `key`, which no real id has (an `audience_size` plan's).
    pub(crate) fn anonymous(key: RecipientKey) -> Self {
        Recipient {
            phone: key.0,
            users: [0, 0],
        }
    }

    /// A phone and the BSUIDs a webhook pairs with it.
    pub(crate) fn linked(phone: RecipientKey, users: [Option<Bsuid>; 2]) -> Self {
        Recipient {
            phone: phone.0,
            users: users.map(|u| u.map_or(0, |b| b.unlinked_key().0)),
        }
    }

    /// The BSUIDs' keys.
    fn users(&self) -> impl Iterator<Item = u64> + '_ {
        self.users.iter().copied().filter(|&k| k != 0)
    }
}

impl OrgState {
    /// The person key the ids count under now.
    #[inline]
    pub(crate) fn person(&self, to: &Recipient) -> RecipientKey {
        if to.phone != 0 {
            return RecipientKey(to.phone);
        }
        if let Some(k) = to.users().find_map(|u| self.links.get(u)) {
            return RecipientKey(k);
        }
        // Validation guarantees an id; a recipient without one would be a bug, counted apart.
        RecipientKey(to.users().next().unwrap_or(0))
    }

    /// Remembers that every BSUID of `to` is `person` (after an allowed send, or a webhook).
    #[inline]
    pub(crate) fn learn(&mut self, to: &Recipient, person: RecipientKey, capacity: usize) {
        if to.users == [0, 0] {
            return;
        }
        for u in to.users() {
            let known = self.links.get(u);
            if known == Some(person.0) || (known.is_none() && person.0 == u) {
                continue;
            }
            if known.is_some() || self.links.len() < capacity {
                self.links.insert(u, person.0);
            }
        }
    }

    /// `user_id_update`: the person's BSUID changed from `previous` to `current`.
    pub(crate) fn rename(&mut self, previous: Bsuid, current: Bsuid, capacity: usize) {
        let old = previous.unlinked_key().0;
        let person = RecipientKey(self.links.get(old).unwrap_or(old));
        let to = Recipient {
            phone: 0,
            users: [current.unlinked_key().0, 0],
        };
        self.learn(&to, person, capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_names_a_phone_a_bsuid_or_both() {
        let phone = Recipient::parse("4915112345678", None).unwrap();
        assert!(phone.phone != 0 && phone.users().count() == 0);
        let bsuid = Recipient::parse("", Some("US.13491208655302741918")).unwrap();
        assert!(bsuid.phone == 0 && bsuid.users().count() == 1);
        let in_recipient = Recipient::parse("US.ENT.11815799212886844830", None).unwrap();
        assert_eq!(in_recipient.users().count(), 1);
        let both = Recipient::parse("16505551234", Some("US.13491208655302741918")).unwrap();
        assert!(both.phone != 0 && both.users().count() == 1);
        let err = |r: &str, u: Option<&str>| match Recipient::parse(r, u) {
            Err(EngineError::Invalid(v)) => v.field,
            other => panic!("{other:?}"),
        };
        assert_eq!(err("", None), "recipient");
        assert_eq!(err("us.123", None), "recipient");
        assert_eq!(err("1650", Some("US.")), "recipient_user_id");
        assert_eq!(err("1650", Some("USA.123")), "recipient_user_id");
        assert_eq!(
            err("1650", Some(&format!("US.{}", "1".repeat(33)))),
            "recipient_user_id"
        );
    }
}
