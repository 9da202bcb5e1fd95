//! The crate's one hex codec (lowercase), for ids, tokens, digests and
//! key files. Decoding is strict: even length, hex digits only.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes`.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The bytes of hex text (either case), or `None`.
pub(crate) fn decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// Lowercase hex of exactly `N` bytes, or `None`.
pub(crate) fn decode_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || s.bytes().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    decode(s)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_text() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&b)).unwrap(), b);
        assert_eq!(encode(&[0xde, 0xad]), "dead");
        assert_eq!(decode("DEad").unwrap(), vec![0xde, 0xad]);
        assert_eq!(decode("abc"), None);
        assert_eq!(decode("zz"), None);
        assert_eq!(decode_array::<2>("dead"), Some([0xde, 0xad]));
        assert_eq!(decode_array::<2>("DEAD"), None);
        assert_eq!(decode_array::<3>("dead"), None);
    }
}
