//! The text a stored token string stands for.
//!
//! Sessions keep token strings as the tokenizer spells them: SentencePiece vocabularies (LLaMA,
//! Mistral, Gemma) mark a word start with `▁` and spell raw bytes as `<0x0A>`; byte-level BPE
//! vocabularies (Qwen2, LLaMA-3) spell every byte through GPT-2's printable alphabet, so a space
//! is `Ġ` and a newline `Ċ`. Views show the text, not the spelling.

/// The text `piece` stands for: `▁` as a space, `<0xNN>` as that byte, and a byte-level piece
/// (one with no `▁` that holds a space, newline or tab marker, `Ġ` `Ċ` `ĉ`) decoded through the
/// byte alphabet, invalid UTF-8 replaced. Other pieces come back unchanged.
pub fn piece_text(piece: &str) -> String {
    if let Some(byte) = byte_piece(piece) {
        return String::from_utf8_lossy(&[byte]).into_owned();
    }
    if piece.contains('▁') {
        return piece.replace('▁', " ");
    }
    if piece.contains(['Ġ', 'Ċ', 'ĉ']) {
        if let Some(bytes) = piece.chars().map(byte_of_char).collect::<Option<Vec<u8>>>() {
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    piece.to_string()
}

/// The byte of a SentencePiece byte-fallback piece such as `<0x0A>`.
fn byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Whether GPT-2's byte alphabet spells `b` as the character with the same code.
fn printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The byte that GPT-2's byte alphabet spells as `c`: printable bytes as themselves, the other
/// 68 bytes, in order, as U+0100 onwards.
fn byte_of_char(c: char) -> Option<u8> {
    let code = u32::from(c);
    if code < 256 {
        let b = code as u8;
        return printable(b).then_some(b);
    }
    let nth = usize::try_from(code - 256).ok()?;
    (0..=255u8).filter(|&b| !printable(b)).nth(nth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentencepiece_markers_read_as_text() {
        assert_eq!(piece_text("▁cat"), " cat");
        assert_eq!(piece_text("<0x0A>"), "\n");
        assert_eq!(piece_text("ing"), "ing");
        assert_eq!(piece_text("<s>"), "<s>");
    }

    #[test]
    fn byte_level_pieces_are_decoded() {
        assert_eq!(piece_text("Ġcat"), " cat");
        assert_eq!(piece_text("ĊĊ"), "\n\n");
        assert_eq!(piece_text("ĉx"), "\tx");
        assert_eq!(piece_text("ĠcafÃ©"), " café");
        assert_eq!(piece_text("<|im_end|>"), "<|im_end|>");
    }

    #[test]
    fn letters_of_other_vocabularies_stay() {
        assert_eq!(piece_text("ł"), "ł");
        assert_eq!(piece_text("▁był"), " był");
        assert_eq!(piece_text("é"), "é");
    }

    #[test]
    fn the_alphabet_covers_every_byte_once() {
        let mut seen = [false; 256];
        for code in 0..=u32::from('Ń') {
            if let Some(b) = char::from_u32(code).and_then(byte_of_char) {
                assert!(!seen[usize::from(b)], "byte {b} spelled twice");
                seen[usize::from(b)] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }
}
