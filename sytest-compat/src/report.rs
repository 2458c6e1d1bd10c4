//! The "are we Synapse yet" report: passing/ran per area and overall, as Markdown.

use std::collections::BTreeMap;

use crate::tap::{Outcome, TestResult};

#[derive(Default, Clone)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub ignored: usize,
    pub failing: Vec<String>,
}

impl Tally {
    fn add(&mut self, result: &TestResult) {
        match &result.outcome {
            Outcome::Pass => self.passed += 1,
            Outcome::Fail => {
                self.failed += 1;
                self.failing.push(result.name.clone());
            }
            Outcome::Skip(_) => self.skipped += 1,
            Outcome::Ignored => self.ignored += 1,
        }
    }

    pub fn ran(&self) -> usize {
        self.passed + self.failed
    }
}

fn percent(passed: usize, ran: usize) -> String {
    if ran == 0 { "–".to_owned() } else { format!("{:.0}%", passed as f64 * 100.0 / ran as f64) }
}

/// Tallies results per area (`area_of` gives each test's area).
pub fn tally<'a>(
    results: &'a [TestResult],
    area_of: impl Fn(&'a TestResult) -> String,
) -> (Tally, BTreeMap<String, Tally>) {
    let mut total = Tally::default();
    let mut areas: BTreeMap<String, Tally> = BTreeMap::new();
    for r in results {
        total.add(r);
        areas.entry(area_of(r)).or_default().add(r);
    }
    (total, areas)
}

/// Renders the Markdown report.
pub fn markdown(title_note: &str, total: &Tally, areas: &BTreeMap<String, Tally>) -> String {
    let mut out = String::new();
    out.push_str("# Are we Synapse yet?\n\n");
    out.push_str("SyTest, the Matrix community's homeserver conformance suite, run against Lattice with\n");
    out.push_str(
        "`sytest-compat` (see `sytest-compat/README.md` to reproduce). Every test that ran is counted:\n",
    );
    out.push_str(
        "a test passes or fails; tests that did not run (a prerequisite failed, or the test is for\n",
    );
    out.push_str("another implementation) are listed as skipped, blacklisted tests as ignored.\n\n");
    out.push_str(title_note);
    out.push_str("\n\n");
    out.push_str(&format!(
        "**Overall: {} of {} tests that ran pass ({})**; {} skipped, {} ignored.\n\n",
        total.passed,
        total.ran(),
        percent(total.passed, total.ran()),
        total.skipped,
        total.ignored
    ));
    out.push_str("| Area | Passing | Ran | % | Skipped |\n|---|---:|---:|---:|---:|\n");
    for (area, t) in areas {
        out.push_str(&format!(
            "| {area} | {} | {} | {} | {} |\n",
            t.passed,
            t.ran(),
            percent(t.passed, t.ran()),
            t.skipped
        ));
    }
    out.push_str("\n## Failing tests by area\n\n");
    for (area, t) in areas.iter().filter(|(_, t)| !t.failing.is_empty()) {
        out.push_str(&format!("<details><summary>{area}: {} failing</summary>\n\n", t.failing.len()));
        for name in &t.failing {
            out.push_str(&format!("- {}\n", name.replace('<', "&lt;").replace('|', "\\|")));
        }
        out.push_str("\n</details>\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, outcome: Outcome) -> TestResult {
        TestResult { name: name.into(), file: None, outcome }
    }

    #[test]
    fn tallies_and_renders() {
        let results = vec![
            r("a", Outcome::Pass),
            r("b", Outcome::Fail),
            r("c", Outcome::Skip("x".into())),
            r("d", Outcome::Pass),
        ];
        let (total, areas) = tally(&results, |t| if t.name == "d" { "Sync".into() } else { "Rooms".into() });
        assert_eq!((total.passed, total.failed, total.skipped), (2, 1, 1));
        assert_eq!(areas["Rooms"].ran(), 2);
        let md = markdown("note", &total, &areas);
        assert!(md.contains("**Overall: 2 of 3 tests that ran pass (67%)**"), "{md}");
        assert!(md.contains("| Sync | 1 | 1 | 100% | 0 |"));
        assert!(md.contains("- b"));
    }
}
