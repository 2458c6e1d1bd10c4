//! Message text between the two networks: CTCP `ACTION` (IRC's `/me`), IRC's formatting codes,
//! Matrix reply fallbacks, and cutting text into lines that fit IRC's line limit.

/// The CTCP delimiter.
const CTCP: char = '\u{1}';

/// The text of a CTCP `ACTION` (`\x01ACTION waves\x01` → `waves`), else `None`. The closing
/// delimiter is optional, as some clients leave it out.
pub fn action_text(text: &str) -> Option<&str> {
    let inner = text.strip_prefix(CTCP)?;
    let inner = inner.strip_suffix(CTCP).unwrap_or(inner);
    if inner == "ACTION" {
        return Some("");
    }
    inner.strip_prefix("ACTION ")
}

/// Whether a message is a CTCP request or reply (`\x01VERSION\x01`…), ACTION included.
pub fn is_ctcp(text: &str) -> bool {
    text.starts_with(CTCP)
}

/// A CTCP `ACTION` with this text.
pub fn action(text: &str) -> String {
    format!("{CTCP}ACTION {text}{CTCP}")
}

/// The bytes [`action`] adds around the text.
pub const ACTION_OVERHEAD: usize = "\u{1}ACTION \u{1}".len();

/// IRC text without its formatting codes (bold, italics, underline, strike-through, monospace,
/// reverse, reset, and colours with their `fg[,bg]` numbers or hex values); other control
/// characters become spaces, so that what reaches Matrix is plain text.
pub fn strip_formatting(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{2}' | '\u{1d}' | '\u{1f}' | '\u{1e}' | '\u{11}' | '\u{16}' | '\u{f}' => {}
            '\u{3}' | '\u{4}' => {
                // `\x03` takes up to two decimal digits, `\x04` six hex digits; then, only if a
                // digit follows the comma, a background colour of the same kind.
                let (width, is_digit): (usize, fn(&char) -> bool) =
                    if c == '\u{3}' { (2, |d| d.is_ascii_digit()) } else { (6, |d| d.is_ascii_hexdigit()) };
                let mut taken = 0;
                while taken < width && chars.peek().is_some_and(is_digit) {
                    chars.next();
                    taken += 1;
                }
                if taken > 0 && chars.peek() == Some(&',') {
                    let mut ahead = chars.clone();
                    ahead.next();
                    if ahead.peek().is_some_and(is_digit) {
                        chars.next();
                        let mut taken = 0;
                        while taken < width && chars.peek().is_some_and(is_digit) {
                            chars.next();
                            taken += 1;
                        }
                    }
                }
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A reply's body without the fallback quoting the message it answers (the leading lines that
/// start with `>`, and the blank line after them), as clients wrote it before Matrix 1.13.
pub fn strip_reply_fallback(body: &str) -> &str {
    if !body.starts_with('>') {
        return body;
    }
    let mut rest = body;
    while rest.starts_with('>') {
        match rest.split_once('\n') {
            Some((_, after)) => rest = after,
            None => return "",
        }
    }
    rest.strip_prefix("\r\n").or_else(|| rest.strip_prefix('\n')).unwrap_or(rest)
}

/// Cuts one line of text into pieces of at most `max_bytes` bytes, at character boundaries,
/// preferring to cut at whitespace (which is then dropped) when one is in the second half of the
/// piece. Empty text gives no pieces.
pub fn split_to_fit(text: &str, max_bytes: usize) -> Vec<String> {
    let max_bytes = max_bytes.max(4); // room for any one character
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > max_bytes {
        let mut cut = max_bytes;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        // Whitespace right at the cut, else the last one before it in the piece's second half.
        let space = if rest[cut..].starts_with(char::is_whitespace) {
            Some(cut)
        } else {
            rest[..cut]
                .char_indices()
                .rev()
                .find(|&(_, c)| c.is_whitespace())
                .map(|(i, _)| i)
                .filter(|&i| i >= max_bytes / 2)
        };
        let (piece, after) = match space {
            Some(at) => {
                let width = rest[at..].chars().next().map_or(1, char::len_utf8);
                (&rest[..at], &rest[at + width..])
            }
            None => rest.split_at(cut),
        };
        pieces.push(piece.trim_end().to_owned());
        rest = after.trim_start();
    }
    if !rest.trim().is_empty() {
        pieces.push(rest.to_owned());
    }
    pieces.retain(|p| !p.is_empty());
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_actions() {
        assert_eq!(action_text("\u{1}ACTION waves\u{1}"), Some("waves"));
        assert_eq!(action_text("\u{1}ACTION waves"), Some("waves"));
        assert_eq!(action_text("\u{1}ACTION\u{1}"), Some(""));
        assert_eq!(action_text("\u{1}VERSION\u{1}"), None);
        assert_eq!(action_text("ACTION waves"), None);
        assert_eq!(action("waves"), "\u{1}ACTION waves\u{1}");
        assert_eq!(action("").len() + 5, ACTION_OVERHEAD + 5);
        assert!(is_ctcp("\u{1}PING 123\u{1}") && !is_ctcp("hi"));
    }

    #[test]
    fn strips_formatting() {
        assert_eq!(strip_formatting("\u{2}bold\u{2} and \u{1d}italic\u{f}"), "bold and italic");
        assert_eq!(strip_formatting("\u{3}4red\u{3} \u{3}04,12both\u{3}"), "red both");
        // A comma not followed by a digit is text; three digits are a colour and a digit.
        assert_eq!(strip_formatting("\u{3}4,text"), ",text");
        assert_eq!(strip_formatting("\u{3}123"), "3");
        assert_eq!(strip_formatting("\u{3},5x"), ",5x");
        assert_eq!(strip_formatting("\u{4}FF00AA,000000hex\u{4}"), "hex");
        assert_eq!(strip_formatting("tab\there"), "tab here");
        assert_eq!(strip_formatting("plain ünïcödé"), "plain ünïcödé");
    }

    #[test]
    fn strips_reply_fallbacks() {
        assert_eq!(strip_reply_fallback("> <@bob:x> hi\n> there\n\nhello"), "hello");
        assert_eq!(strip_reply_fallback("> <@bob:x> hi\n\nline 1\nline 2"), "line 1\nline 2");
        assert_eq!(strip_reply_fallback("no fallback\n> quote"), "no fallback\n> quote");
        assert_eq!(strip_reply_fallback("> only a quote"), "");
        assert_eq!(strip_reply_fallback("> a\r\n\r\nb"), "b");
    }

    #[test]
    fn splits_at_whitespace_within_the_limit() {
        assert_eq!(split_to_fit("hello world", 400), ["hello world"]);
        assert_eq!(split_to_fit("aaaa bbbb cccc", 9), ["aaaa bbbb", "cccc"]);
        assert_eq!(split_to_fit("aaaa bbbb cccc", 10), ["aaaa bbbb", "cccc"]);
        assert_eq!(split_to_fit("", 10), Vec::<String>::new());
        assert_eq!(split_to_fit("   ", 10), Vec::<String>::new());
    }

    #[test]
    fn splits_long_words_at_char_boundaries() {
        assert_eq!(split_to_fit("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        // "é" is two bytes: never cut in the middle.
        let pieces = split_to_fit("éééééé", 5);
        assert_eq!(pieces, ["éé", "éé", "éé"]);
        // A space too early in the piece is not used: the piece would be wastefully short.
        assert_eq!(split_to_fit("a bcdefghijkl", 8), ["a bcdefg", "hijkl"]);
    }

    #[test]
    fn every_piece_fits() {
        let text = "Lorem ipsum dolor sit amet, «consectetur» adipiscing elit 🦀🦀🦀 ".repeat(40);
        for max in [10, 50, 395] {
            let pieces = split_to_fit(&text, max);
            assert!(pieces.iter().all(|p| p.len() <= max && !p.is_empty()), "{max}");
            let words = |s: &str| s.split_whitespace().collect::<String>();
            assert_eq!(words(&pieces.join(" ")), words(&text));
        }
    }
}
