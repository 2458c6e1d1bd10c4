//! Reading SyTest's TAP output (`-O lattice-tap`, which adds `# file:` comments).

/// How one test ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    /// Did not run: a prerequisite failed or the test does not apply.
    Skip(String),
    /// Blacklisted: ran, outcome ignored.
    Ignored,
}

#[derive(Debug, Clone)]
pub struct TestResult {
    pub name: String,
    /// The test file (`tests/...`), when the output names it.
    pub file: Option<String>,
    pub outcome: Outcome,
}

/// A test's name without the ` (N subtests)` SyTest appends to tests with subtests: the count
/// changes from run to run (one per event awaited, say) while the test stays the same.
pub fn without_subtest_count(name: &str) -> &str {
    if let Some(open) = name.strip_suffix(" subtests)").and_then(|n| n.rfind(" ("))
        && name[open + 2..name.len() - " subtests)".len()].bytes().all(|b| b.is_ascii_digit())
        && name.len() - " subtests)".len() > open + 2
    {
        return &name[..open];
    }
    name
}

/// Parses TAP text into per-test results, in order.
pub fn parse(tap: &str) -> Vec<TestResult> {
    let mut file = None;
    let mut out = Vec::new();
    for line in tap.lines() {
        if let Some(f) = line.strip_prefix("# file: ") {
            file = Some(f.trim().to_owned());
            continue;
        }
        let (ok, rest) = if let Some(rest) = line.strip_prefix("ok ") {
            (true, rest)
        } else if let Some(rest) = line.strip_prefix("not ok ") {
            (false, rest)
        } else {
            continue;
        };
        // Drop the test number.
        let rest = rest.split_once(' ').map(|(_, r)| r).unwrap_or("");
        let (name, directive) = match rest.rfind(" # ") {
            Some(i) => (&rest[..i], Some(rest[i + 3..].trim())),
            None => (rest, None),
        };
        let directive_lower = directive.map(str::to_lowercase);
        let outcome = match directive_lower.as_deref() {
            Some(d) if d.starts_with("skip") => {
                Outcome::Skip(directive.unwrap_or_default().get(4..).unwrap_or_default().trim().to_owned())
            }
            Some(d) if d.starts_with("todo") => Outcome::Ignored,
            _ if ok => Outcome::Pass,
            _ => Outcome::Fail,
        };
        let name = without_subtest_count(name.trim()).to_owned();
        out.push(TestResult { name, file: file.clone(), outcome });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_outcomes_files_and_names_with_hashes() {
        let tap = "\
# Started test HTTPS Server
# file: tests/10apidoc/01register.pl
ok 1 GET /register yields a set of flows
not ok 2 POST /register can create a user
ok 3 POST /register downcases capitals # skip lack of can_register_dummy_flow
# file: tests/31sync/02sync.pl
not ok 4 Can sync # TODO expected fail
ok 5 Room #1 works
ok 6 Presence arrives (SYN-115) (205 subtests)
ok 7 Counts (x subtests)
1..7
";
        let results = parse(tap);
        assert_eq!(results.len(), 7);
        assert_eq!(results[5].name, "Presence arrives (SYN-115)", "the count varies between runs");
        assert_eq!(results[6].name, "Counts (x subtests)");
        assert_eq!(results[0].outcome, Outcome::Pass);
        assert_eq!(results[0].file.as_deref(), Some("tests/10apidoc/01register.pl"));
        assert_eq!(results[1].outcome, Outcome::Fail);
        assert_eq!(results[2].outcome, Outcome::Skip("lack of can_register_dummy_flow".into()));
        assert_eq!(results[2].name, "POST /register downcases capitals");
        assert_eq!(results[3].outcome, Outcome::Ignored);
        assert_eq!(results[4].name, "Room #1 works");
        assert_eq!(results[4].file.as_deref(), Some("tests/31sync/02sync.pl"));
    }
}
