//! An org's phone numbers: which slot a number is in, and replacing or re-rating them.
//!
//! Slots are never reused (see [`PhoneSlot`]): a removed number keeps its slot and its window, so
//! re-adding it cannot dodge the window, and the slots an org may use are bounded.

use crate::error::{EngineError, ValidationError};
use crate::number::PhoneSlot;
use crate::org::PhoneNumberConfig;
use crate::policy::{Policy, TierScope};

use super::{MAX_PHONE_SLOTS, OrgState};

impl OrgState {
    /// The slot of an active phone number. Most orgs have a handful of numbers, and scanning
    /// them touches memory the decision reads anyway; the index serves the rest.
    #[inline]
    pub(super) fn phone_slot(&self, key: u128) -> Option<u16> {
        if self.first_phone == Some(key) {
            return Some(0);
        }
        if self.phones.len() <= 8 {
            return self
                .phones
                .iter()
                .position(|s| s.active && s.key == key)
                .map(|i| i as u16);
        }
        self.phone_index.get(&key).copied()
    }

    /// The slot of `phone_number_id` (whose key is `key`), or the NOT_FOUND error naming it.
    pub(crate) fn slot_of(&self, phone_number_id: &str, key: u128) -> Result<u16, EngineError> {
        self.phone_slot(key)
            .ok_or_else(|| EngineError::UnknownPhoneNumber {
                org_id: self.id.to_string(),
                phone_number_id: phone_number_id.to_owned(),
            })
    }

    /// Checks that `phones` can replace the current numbers without running out of slots.
    pub(super) fn check_phones(&self, phones: &[PhoneNumberConfig]) -> Result<(), ValidationError> {
        let added = phones
            .iter()
            .filter(|p| {
                !self
                    .phones
                    .iter()
                    .any(|s| s.config.phone_number_id == p.phone_number_id)
            })
            .count();
        if self.phones.len() + added > MAX_PHONE_SLOTS {
            return Err(ValidationError::new(
                "org.phone_numbers",
                format!("this org has used all {MAX_PHONE_SLOTS} phone number slots"),
            ));
        }
        Ok(())
    }

    /// Replaces the org's numbers. Existing numbers keep their slot, window and rate state.
    pub(super) fn set_phones(&mut self, phones: Vec<PhoneNumberConfig>, policy: &Policy) {
        for s in &mut self.phones {
            s.active = false;
        }
        self.phone_index.clear();
        for p in &phones {
            let existing = self
                .phones
                .iter()
                .position(|s| s.config.phone_number_id == p.phone_number_id);
            let slot = match existing {
                Some(i) => {
                    self.phones[i].reconfigure(p, policy);
                    i
                }
                None => {
                    self.phones.push(PhoneSlot::new(p.clone(), policy));
                    self.phones.len() - 1
                }
            };
            self.phone_index.insert(self.phones[slot].key, slot as u16);
        }
        self.first_phone = self.phones.first().filter(|p| p.active).map(|p| p.key);
        if policy.tier_scope == TierScope::PhoneNumber {
            self.windows.ensure(self.phones.len());
        }
        self.config.phone_numbers = phones;
    }

    /// Sets one number's configured rate (WhatsApp's THROUGHPUT_UPGRADE, or an operator).
    pub(super) fn set_number_throughput(&mut self, slot: u16, mps: u32, policy: &Policy) {
        let id = &self.phones[slot as usize].config.phone_number_id;
        let mut phones = self.config.phone_numbers.clone();
        for p in phones.iter_mut().filter(|p| &p.phone_number_id == id) {
            p.throughput_mps = mps;
        }
        self.set_phones(phones, policy);
    }
}
