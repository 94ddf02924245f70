//! Randomness, identifiers and time formats: the primitives the rest of the crate builds on.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::{OffsetDateTime, macros::format_description};

/// `N` bytes from the operating system's generator.
///
/// # Panics
///
/// If that generator fails, which it does not on any platform the emulator supports.
fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        panic!("the operating system's random number generator failed");
    }
    bytes
}

/// A random version-4 GUID in the lowercase hyphenated form Azure uses everywhere.
pub(crate) fn guid() -> String {
    let mut b: [u8; 16] = random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0],
        b[1],
        b[2],
        b[3],
        b[4],
        b[5],
        b[6],
        b[7],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// `N` random bytes, base64url without padding.
pub(crate) fn random_b64url<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(random::<N>())
}

/// An upper-case hex string of `N` random bytes (the shape of `x-msedge-ref` parts).
pub(crate) fn random_hex_upper<const N: usize>() -> String {
    random::<N>().iter().map(|b| format!("{b:02X}")).collect()
}

/// A uniformly distributed number in `[0, 1)`.
pub(crate) fn random_unit() -> f64 {
    // The top 53 bits fill an f64's mantissa exactly.
    let bits = u64::from_le_bytes(random()) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// Compares secrets without an early exit, so response timing does not reveal
/// how much of a guessed token was right.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// Whether `s` looks like a GUID (`8-4-4-4-12` hex digits).
pub(crate) fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == lens.len()
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// `2024-05-01 12:34:56Z`: the `timestamp` format of Entra error bodies.
pub(crate) fn entra_timestamp(t: OffsetDateTime) -> String {
    t.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// `2024-05-01T12:34:56.0000000Z`: the .NET round-trip format used inside
/// AADSTS messages.
pub(crate) fn dotnet_timestamp(t: OffsetDateTime) -> String {
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
    ))
    .unwrap_or_default()
}

/// `2024-05-01T12:34:56Z`.
pub(crate) fn rfc3339_seconds(t: OffsetDateTime) -> String {
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// A unix timestamp as a .NET round-trip string, or the raw number when it is
/// outside the representable range (hostile assertions can carry anything).
pub(crate) fn dotnet_timestamp_from_unix(secs: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => dotnet_timestamp(t),
        Err(_) => secs.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_shape() {
        let g = guid();
        assert!(is_guid(&g), "{g}");
        assert_eq!(&g[14..15], "4");
        assert_ne!(guid(), guid());
    }

    #[test]
    fn random_shapes() {
        assert_eq!(random_b64url::<32>().len(), 43);
        assert_eq!(random_hex_upper::<16>().len(), 32);
        assert_ne!(random_b64url::<16>(), random_b64url::<16>());
        for _ in 0..100 {
            let x = random_unit();
            assert!((0.0..1.0).contains(&x), "{x}");
        }
    }

    #[test]
    fn guid_check() {
        assert!(is_guid("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(!is_guid("72f988bf-86f1-41af-91ab-2d7cd011db4"));
        assert!(!is_guid("contoso.onmicrosoft.com"));
        assert!(!is_guid(""));
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"abcd", b"abc"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn timestamps() {
        let t = OffsetDateTime::from_unix_timestamp(1_714_566_896)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(entra_timestamp(t), "2024-05-01 12:34:56Z");
        assert_eq!(dotnet_timestamp(t), "2024-05-01T12:34:56.0000000Z");
        assert_eq!(rfc3339_seconds(t), "2024-05-01T12:34:56Z");
        assert_eq!(dotnet_timestamp_from_unix(i64::MAX), i64::MAX.to_string());
    }
}
