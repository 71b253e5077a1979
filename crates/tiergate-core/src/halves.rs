//! A 64-bit key kept as two 32-bit halves.
//!
//! The per-recipient records that memory per send is made of (window nodes, permits, pair
//! cells; issue #16) hold a 64-bit recipient key beside 32-bit fields. Stored as a `u64` it
//! would make each record 8-aligned and pad it (20 bytes would become 24); as two halves the
//! record stays 4-aligned. Permits, whose other fields are 16-bit, take the key in
//! [`quarters`].

/// `v` as its low and high halves.
#[inline]
pub(crate) fn split(v: u64) -> [u32; 2] {
    [v as u32, (v >> 32) as u32]
}

/// The value [`split`] made `v` from.
#[inline]
pub(crate) fn join(v: [u32; 2]) -> u64 {
    u64::from(v[0]) | (u64::from(v[1]) << 32)
}

/// `v` as two 16-bit pieces, low first (a permit's 32-bit fields; see [`quarters`]).
#[inline(always)]
pub(crate) fn pieces(v: u32) -> [u16; 2] {
    [v as u16, (v >> 16) as u16]
}

/// The value [`pieces`] made `v` from.
#[inline(always)]
pub(crate) fn from_pieces(v: [u16; 2]) -> u32 {
    u32::from(v[0]) | (u32::from(v[1]) << 16)
}

/// `v` as four 16-bit pieces, low first: for a record whose other fields are 16-bit, so that
/// it is 2-aligned and not padded (permits: 18 bytes, not 20).
#[inline]
pub(crate) fn quarters(v: u64) -> [u16; 4] {
    [
        v as u16,
        (v >> 16) as u16,
        (v >> 32) as u16,
        (v >> 48) as u16,
    ]
}

/// The value [`quarters`] made `v` from.
#[inline]
pub(crate) fn from_quarters(v: [u16; 4]) -> u64 {
    u64::from(v[0]) | (u64::from(v[1]) << 16) | (u64::from(v[2]) << 32) | (u64::from(v[3]) << 48)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for v in [
            0,
            1,
            u64::from(u32::MAX),
            1 << 32,
            u64::MAX,
            0x8000_0000_dead_beef,
        ] {
            assert_eq!(join(split(v)), v);
            assert_eq!(from_quarters(quarters(v)), v);
            assert_eq!(from_pieces(pieces(v as u32)), v as u32);
        }
    }
}
