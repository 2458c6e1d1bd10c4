//! The whitelist (tests that must keep passing), the blacklist (tests skipped, each with a
//! reason) and the area lists (file → area, test name → area).

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, Result};

/// Reads a list of test names: one per line, `#` starts a comment, blank lines ignored.
pub fn read_names(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| crate::tap::without_subtest_count(l).to_owned())
        .collect())
}

/// `file-areas.list`: `prefix  Area name` per line (whitespace between).
pub fn read_file_areas(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (prefix, area) = l.split_once(char::is_whitespace)?;
            Some((prefix.to_owned(), area.trim().to_owned()))
        })
        .collect())
}

/// The area of a test file by longest matching prefix (under `tests/`).
pub fn area_of_file(file_areas: &[(String, String)], file: &str) -> Option<String> {
    let relative = file.strip_prefix("tests/").unwrap_or(file);
    file_areas
        .iter()
        .filter(|(prefix, _)| relative.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, area)| area.clone())
}

/// `are-we-synapse-yet.list`: `Area<TAB>test name` per line.
pub fn read_name_areas(path: &Path) -> Result<BTreeMap<String, String>> {
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .map(|(area, name)| (crate::tap::without_subtest_count(name).to_owned(), area.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let areas = vec![
            ("31sync/".to_owned(), "Sync".to_owned()),
            ("31sync/01filter.pl".to_owned(), "Filters".to_owned()),
        ];
        assert_eq!(area_of_file(&areas, "tests/31sync/01filter.pl").as_deref(), Some("Filters"));
        assert_eq!(area_of_file(&areas, "tests/31sync/02sync.pl").as_deref(), Some("Sync"));
        assert_eq!(area_of_file(&areas, "tests/99other.pl"), None);
    }
}
