//! `sytest-compat`: runs SyTest against Lattice and keeps score.
//!
//! - `run`: builds Lattice, runs a SyTest checkout against two Lattice servers through our driver
//!   plugin (`plugin/`), writes the TAP output, then reports and checks the whitelist.
//! - `report`: the "are we Synapse yet" Markdown report (per area and overall) from a TAP file.
//! - `check`: every whitelisted test must pass (the ratchet); `--update` adds newly passing tests.
//! - `map`: regenerates `are-we-synapse-yet.list` (test name → area) from a TAP file.
//!
//! SyTest itself is used unmodified: the driver is loaded through `SYTEST_PLUGINS`.

mod lists;
mod report;
mod tap;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Run SyTest against Lattice and report how far it gets")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build Lattice and run SyTest against it.
    Run {
        /// Path of a SyTest checkout.
        #[arg(long)]
        sytest: PathBuf,
        /// Run on PostgreSQL: a URL like postgres://postgres@127.0.0.1:5432 (databases are created).
        #[arg(long)]
        postgres: Option<String>,
        /// Use the existing target/release/lattice instead of building.
        #[arg(long)]
        no_build: bool,
        /// Multiplies SyTest's timeouts (use 2 on a busy machine).
        #[arg(long, default_value_t = 1)]
        timeout_factor: u32,
        /// Where results go (default: sytest-compat/out).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Rewrite REPORT.md and the area list from this run.
        #[arg(long)]
        write_report: bool,
        /// Test files to run (default: all), e.g. tests/31sync/02sync.pl
        tests: Vec<String>,
    },
    /// Print (or write) the report for a TAP file.
    Report {
        tap: PathBuf,
        /// Write sytest-compat/REPORT.md instead of printing.
        #[arg(long)]
        write: bool,
        /// Describes the run in the report (database, date, SyTest commit).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Check the whitelist against a TAP file.
    Check {
        tap: PathBuf,
        /// Add newly passing tests to the whitelist.
        #[arg(long)]
        update: bool,
    },
    /// Regenerate are-we-synapse-yet.list from a TAP file with `# file:` markers.
    Map { tap: PathBuf },
}

fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn workspace_dir() -> PathBuf {
    compat_dir().parent().expect("sytest-compat lives in the workspace").to_owned()
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Run { sytest, postgres, no_build, timeout_factor, out, write_report, tests } => {
            let out = out.unwrap_or_else(|| compat_dir().join("out"));
            let tap = run(&sytest, postgres.as_deref(), no_build, timeout_factor, &out, &tests)?;
            let engine = if postgres.is_some() { "PostgreSQL" } else { "SQLite" };
            let note = run_note(&sytest, engine);
            let text = std::fs::read_to_string(&tap)?;
            if write_report {
                map(&text)?;
            }
            report(&text, write_report, &note)?;
            check(&text, false)
        }
        Cmd::Report { tap, write, note } => report(&read(&tap)?, write, &note),
        Cmd::Check { tap, update } => check(&read(&tap)?, update),
        Cmd::Map { tap } => map(&read(&tap)?),
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn run_note(sytest: &Path, engine: &str) -> String {
    let commit = Command::new("git")
        .arg("-C")
        .arg(sytest)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let lattice = Command::new("git")
        .arg("-C")
        .arg(workspace_dir())
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    format!("Run on {engine}, SyTest commit `{commit}`, Lattice commit `{lattice}`, `--room-version 10`.")
}

fn run(
    sytest: &Path,
    postgres: Option<&str>,
    no_build: bool,
    timeout_factor: u32,
    out: &Path,
    tests: &[String],
) -> Result<PathBuf> {
    let sytest =
        sytest.canonicalize().with_context(|| format!("no SyTest checkout at {}", sytest.display()))?;
    ensure!(sytest.join("run-tests.pl").exists(), "{} is not a SyTest checkout", sytest.display());
    let workspace = workspace_dir();
    if !no_build {
        let status = Command::new("cargo")
            .current_dir(&workspace)
            .args(["build", "--release", "-p", "homeserver"])
            .status()
            .context("running cargo build")?;
        ensure!(status.success(), "building Lattice failed");
    }
    let binary = workspace.join("target/release/lattice");
    ensure!(binary.exists(), "{} does not exist (build it, or drop --no-build)", binary.display());
    std::fs::create_dir_all(out)?;
    let out = out.canonicalize()?;
    let work = out.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let tap_path = out.join("results.tap");
    let tap_file = std::fs::File::create(&tap_path)?;
    let log_file = std::fs::File::create(out.join("sytest.log"))?;

    let shim = workspace.join("../shared/tools/sytest-perl-shim");
    let mut perl5lib = std::env::var("PERL5LIB").unwrap_or_default();
    if shim.exists() {
        perl5lib = format!("{}:{perl5lib}", shim.canonicalize()?.display());
    }
    let mut cmd = Command::new("perl");
    cmd.current_dir(&sytest)
        .env("SYTEST_PLUGINS", compat_dir().join("plugin"))
        .env("PERL5LIB", perl5lib)
        .env("TIMEOUT_FACTOR", timeout_factor.to_string())
        .arg("run-tests.pl")
        .args(["-I", "Lattice", "--lattice-binary"])
        .arg(&binary)
        .args(["--room-version", "10", "-O", "lattice-tap", "--all", "--work-directory"])
        .arg(&work)
        .arg("-B")
        .arg(compat_dir().join("sytest-blacklist"))
        .args(tests)
        .stdout(tap_file)
        .stderr(log_file);
    match postgres {
        Some(url) => cmd.env("LATTICE_SYTEST_POSTGRES", url),
        None => cmd.env_remove("LATTICE_SYTEST_POSTGRES"),
    };
    eprintln!("running SyTest ({}); TAP output in {}", sytest.display(), tap_path.display());
    let status = cmd.status().context("running perl run-tests.pl")?;
    // SyTest exits non-zero when tests fail; that is what the report is for.
    if status.code().is_none() {
        bail!("SyTest was killed");
    }
    Ok(tap_path)
}

fn areas_for(results: &[tap::TestResult]) -> Result<impl Fn(&tap::TestResult) -> String> {
    let by_name = lists::read_name_areas(&compat_dir().join("are-we-synapse-yet.list"))?;
    let by_file = lists::read_file_areas(&compat_dir().join("file-areas.list"))?;
    let _ = results;
    Ok(move |r: &tap::TestResult| {
        by_name
            .get(&r.name)
            .cloned()
            .or_else(|| r.file.as_deref().and_then(|f| lists::area_of_file(&by_file, f)))
            .unwrap_or_else(|| "Other".to_owned())
    })
}

fn report(tap_text: &str, write: bool, note: &str) -> Result<()> {
    let results = tap::parse(tap_text);
    ensure!(!results.is_empty(), "no test results in the TAP output");
    let area_of = areas_for(&results)?;
    let (total, areas) = report::tally(&results, area_of);
    let markdown = report::markdown(note, &total, &areas);
    if write {
        std::fs::write(compat_dir().join("REPORT.md"), &markdown)?;
        eprintln!("wrote {}", compat_dir().join("REPORT.md").display());
    } else {
        println!("{markdown}");
    }
    eprintln!("overall: {} of {} tests that ran pass; {} skipped", total.passed, total.ran(), total.skipped);
    Ok(())
}

/// Names that passed. SyTest reuses a name for variants of a test (local and over federation,
/// one per room version): a name passes if some run of it passed and none failed; runs that
/// were skipped do not count either way.
fn passing_names(results: &[tap::TestResult]) -> BTreeSet<&str> {
    let mut verdict: BTreeMap<&str, bool> = BTreeMap::new();
    for r in results {
        match r.outcome {
            tap::Outcome::Pass => {
                verdict.entry(r.name.as_str()).or_insert(true);
            }
            tap::Outcome::Fail => {
                verdict.insert(r.name.as_str(), false);
            }
            tap::Outcome::Skip(_) | tap::Outcome::Ignored => {}
        }
    }
    verdict.into_iter().filter(|(_, passed)| *passed).map(|(name, _)| name).collect()
}

fn check(tap_text: &str, update: bool) -> Result<()> {
    let results = tap::parse(tap_text);
    let whitelist_path = compat_dir().join("sytest-whitelist");
    let whitelist: BTreeSet<String> = lists::read_names(&whitelist_path)?.into_iter().collect();
    let passing = passing_names(&results);
    let regressions: Vec<&String> =
        whitelist.iter().filter(|name| !passing.contains(name.as_str())).collect();
    let newly: Vec<&str> = passing.iter().copied().filter(|name| !whitelist.contains(*name)).collect();
    if !newly.is_empty() {
        eprintln!("{} passing tests are not in the whitelist yet:", newly.len());
        for name in &newly {
            eprintln!("  + {name}");
        }
    }
    if update && !newly.is_empty() {
        let mut all: BTreeSet<String> = whitelist.clone();
        all.extend(newly.iter().map(|s| s.to_string()));
        let mut text =
            String::from("# SyTest tests Lattice passes; CI-style ratchet: none of them may regress.\n");
        text.push_str("# Maintained with `sytest-compat check --update <results.tap>`.\n");
        for name in all {
            text.push_str(&name);
            text.push('\n');
        }
        std::fs::write(&whitelist_path, text)?;
        eprintln!("whitelist updated");
    }
    if !regressions.is_empty() {
        eprintln!("{} whitelisted tests did not pass:", regressions.len());
        for name in &regressions {
            eprintln!("  - {name}");
        }
        bail!("whitelist regressions");
    }
    eprintln!("whitelist: all {} whitelisted tests pass", whitelist.len());
    Ok(())
}

fn map(tap_text: &str) -> Result<()> {
    let results = tap::parse(tap_text);
    let by_file = lists::read_file_areas(&compat_dir().join("file-areas.list"))?;
    let path = compat_dir().join("are-we-synapse-yet.list");
    let mut existing = lists::read_name_areas(&path)?;
    for r in &results {
        if let Some(area) = r.file.as_deref().and_then(|f| lists::area_of_file(&by_file, f)) {
            existing.insert(r.name.clone(), area);
        }
    }
    let mut lines: Vec<String> = existing.into_iter().map(|(name, area)| format!("{area}\t{name}")).collect();
    lines.sort();
    let mut text =
        String::from("# SyTest test name -> area, generated by `sytest-compat map` from file-areas.list.\n");
    text.push_str(&lines.join("\n"));
    text.push('\n');
    std::fs::write(&path, text)?;
    eprintln!("wrote {} ({} tests)", path.display(), lines.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_passes_when_a_run_passed_and_none_failed() {
        let tap = "ok 1 Same name\nok 2 Same name # skip lack of federation\n\
                   ok 3 Mixed\nnot ok 4 Mixed\nok 5 Only skipped # skip no\n";
        let results = tap::parse(tap);
        let passing = passing_names(&results);
        assert_eq!(passing.into_iter().collect::<Vec<_>>(), vec!["Same name"]);
    }
}
