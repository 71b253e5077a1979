//! Where a key lives in a Redis Cluster: its hash slot.
//!
//! Every key of an org carries the hash tag `{org}`, so an org's keys share one slot, and a
//! script may touch all of them. The router sends each call to its slot's master; a slot
//! computed differently from Redis would send every call of an org to the wrong master first.

/// Hash slots in a Redis Cluster.
pub(crate) const SLOTS: usize = 16_384;

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag (`{…}`, when not empty) or of the
/// whole key, modulo 16,384, as Redis Cluster computes it. Public so that tests can hold it
/// against Redis's own `CLUSTER KEYSLOT`: a slot computed differently would send every call of
/// an org to the wrong master first.
pub fn hash_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(tagged) % SLOTS as u16
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // From the Redis Cluster specification.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(hash_slot(b"foo"), 12_182);
        assert_eq!(
            hash_slot(b"{user1000}.following"),
            hash_slot(b"{user1000}.followers")
        );
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"user1000"));
        // An empty tag hashes the whole key.
        assert_eq!(
            hash_slot(b"foo{}{bar}"),
            crc16_xmodem(b"foo{}{bar}") % 16_384
        );
        assert_eq!(hash_slot(b"foo{{bar}}zap"), hash_slot(b"{bar"));
        assert_eq!(hash_slot(b"tg:{acme}:log"), hash_slot(b"tg:{acme}:snap"));
    }
}
