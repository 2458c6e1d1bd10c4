//! Tokenising text for full-text search, the same way for indexing and for queries.
//!
//! Words are lower-cased runs of letters and digits. Chinese, Japanese and Korean are written
//! without spaces, so a run of such characters is split into its single characters and its
//! overlapping pairs (bigrams): "你好世界" indexes 你 好 世 界 你好 好世 世界, and a query for 你好
//! (tokens 你 好 你好) finds it with any plain word index. Both SQLite FTS5 and PostgreSQL
//! `tsvector` then only need their simplest tokeniser.

/// True for characters of scripts written without word separators.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK Compatibility Ideographs
        | 0x20000..=0x2FFFF  // CJK Extensions B and beyond
    )
}

fn push_cjk_run(run: &mut Vec<char>, out: &mut Vec<String>) {
    for c in run.iter() {
        out.push(c.to_string());
    }
    for pair in run.windows(2) {
        out.push(pair.iter().collect());
    }
    run.clear();
}

/// The search tokens of a text, in order (duplicates kept).
pub fn search_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut cjk: Vec<char> = Vec::new();
    for c in text.chars() {
        if is_cjk(c) {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            cjk.push(c);
        } else if c.is_alphanumeric() {
            if !cjk.is_empty() {
                push_cjk_run(&mut cjk, &mut out);
            }
            word.extend(c.to_lowercase());
        } else {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            if !cjk.is_empty() {
                push_cjk_run(&mut cjk, &mut out);
            }
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    if !cjk.is_empty() {
        push_cjk_run(&mut cjk, &mut out);
    }
    out
}

/// The text stored in the search index: its tokens separated by spaces.
pub fn index_text(text: &str) -> String {
    search_tokens(text).join(" ")
}

/// The distinct tokens of a search query.
pub fn query_tokens(query: &str) -> Vec<String> {
    let mut tokens = search_tokens(query);
    let mut seen = std::collections::HashSet::new();
    tokens.retain(|t| seen.insert(t.clone()));
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercased_and_split() {
        assert_eq!(search_tokens("Hello, World! v2.0"), vec!["hello", "world", "v2", "0"]);
    }

    #[test]
    fn cjk_runs_become_unigrams_and_bigrams() {
        assert_eq!(search_tokens("你好世界"), vec!["你", "好", "世", "界", "你好", "好世", "世界"]);
        // A query for a substring shares all its tokens with the text.
        let doc: std::collections::HashSet<String> = search_tokens("我说你好世界吧").into_iter().collect();
        for token in query_tokens("你好") {
            assert!(doc.contains(&token), "{token}");
        }
        assert!(query_tokens("こんにちは").contains(&"にち".to_owned()));
    }

    #[test]
    fn mixed_scripts_and_duplicates() {
        assert_eq!(search_tokens("abc中文def"), vec!["abc", "中", "文", "中文", "def"]);
        assert_eq!(query_tokens("a a"), vec!["a"]);
        assert_eq!(index_text("Hi 你好"), "hi 你 好 你好");
    }
}
