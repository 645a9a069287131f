//! The bytes a token stands for: GPT-2's byte-level alphabet read backwards.
//!
//! Byte-level BPE writes every byte as a printable char (`' '` as `Ġ`, `'\n'` as `Ċ`, ...)
//! so that tokens are strings. Decoding maps each char of a normal token back to its byte;
//! control and user-defined tokens stand for their text as is, `<0xAB>` byte tokens for one
//! byte, as in llama.cpp's `token_to_piece`.

use super::vocab::Attr;

/// Appends what `text` stands for with special tokens rendered (llama.cpp's piece cache).
pub(crate) fn render_piece(text: &str, attr: Attr, out: &mut Vec<u8>) {
    if attr.any(Attr::SPECIAL) {
        out.extend_from_slice(text.as_bytes());
    } else if attr.any(Attr::NORMAL) {
        decode_byte_level(text, out);
    } else if attr.any(Attr::BYTE) {
        match parse_byte_token(text) {
            Some(byte) => out.push(byte),
            None => decode_byte_level(text, out),
        }
    }
    // Unused and undefined tokens render as nothing, as in llama.cpp.
}

/// The byte of a `<0xAB>` token.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Maps each char of a byte-level token back to its byte. A char outside GPT-2's alphabet
/// (which a well-formed byte-level vocabulary never holds) is kept as its own UTF-8; llama.cpp
/// writes an `[UNK_BYTE_0x..]` marker there instead.
fn decode_byte_level(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match char_to_byte(c) {
            Some(byte) => out.push(byte),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

/// Bytes GPT-2's `bytes_to_unicode` maps to themselves.
const fn is_printable_byte(byte: u8) -> bool {
    matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The 68 other bytes in ascending order; byte `SHIFTED_BYTES[n]` is written as U+0100 + n.
const SHIFTED_BYTES: [u8; 68] = {
    let mut table = [0u8; 68];
    let mut n = 0;
    let mut byte = 0u8;
    loop {
        if !is_printable_byte(byte) {
            table[n] = byte;
            n += 1;
        }
        if byte == u8::MAX {
            break;
        }
        byte += 1;
    }
    table
};

/// The inverse of GPT-2's `bytes_to_unicode`: printable bytes are their own char, the other
/// 68 bytes map, in ascending order, to U+0100.. U+0143.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let code = u32::from(c);
    if let Ok(byte) = u8::try_from(code) {
        return is_printable_byte(byte).then_some(byte);
    }
    let offset = usize::try_from(code.checked_sub(0x100)?).ok()?;
    SHIFTED_BYTES.get(offset).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_onto_256_chars() {
        let mut seen = [false; 256];
        for code in 0..0x200u32 {
            if let Some(byte) = char::from_u32(code).and_then(char_to_byte) {
                assert!(!seen[byte as usize], "byte {byte} mapped twice");
                seen[byte as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(char_to_byte('Ġ'), Some(b' '));
        assert_eq!(char_to_byte('Ċ'), Some(b'\n'));
        assert_eq!(char_to_byte('ĉ'), Some(b'\t'));
        assert_eq!(char_to_byte('a'), Some(b'a'));
        assert_eq!(char_to_byte('中'), None);
    }

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(b'\n'));
        assert_eq!(parse_byte_token("<0xff>"), Some(0xFF));
        assert_eq!(parse_byte_token("<0x0A"), None);
        assert_eq!(parse_byte_token("<0x123>"), None);
    }
}
