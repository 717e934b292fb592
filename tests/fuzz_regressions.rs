//! The fuzz targets (fuzz/, docs/fuzzing.md) as regular tests: their bodies are compiled here
//! from `fuzz/src/harness/` and run on
//!
//! * every committed seed (`fuzz/seeds/<target>/`), so a seed that stops parsing or starts
//!   crashing fails `cargo test`, and the fixture's own tokens are checked to verify (the
//!   fuzzer starts from inputs that reach claim validation and the routes);
//! * every crash input the fuzzer ever found (`fuzz/regressions/<target>/`), each also named
//!   by its own `#[test]` below, with what it found.
//!
//! `FEDAUTHZ_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_regressions write_seeds` rewrites
//! the seed files from `fuzz/src/harness/seeds.rs`.

#[path = "../fuzz/src/harness/mod.rs"]
#[allow(dead_code)]
mod harness;

use std::path::{Path, PathBuf};

use fedauthz::authz::Decision;
use fedauthz::extract::LocationSet;
use harness::fixture::{self, ISSUERS, NOW};
use harness::seeds::{self, TARGETS};
use harness::targets;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every file of `fuzz/<kind>/<target>/` through its target; returns how many ran.
fn replay(kind: &str) -> usize {
    let mut count = 0;
    for target in TARGETS {
        for file in files(&fuzz_dir().join(kind).join(target)) {
            let data = std::fs::read(&file).expect("read input");
            eprintln!("{target}: {}", file.display());
            seeds::run(target, &data);
            count += 1;
        }
    }
    count
}

#[test]
fn every_seed_runs_through_its_target() {
    for target in TARGETS {
        assert!(
            !files(&fuzz_dir().join("seeds").join(target)).is_empty(),
            "fuzz/seeds/{target}/ has seeds"
        );
    }
    assert!(replay("seeds") > 0);
}

#[test]
fn every_regression_input_runs_through_its_target() {
    replay("regressions");
}

#[test]
fn the_fixture_tokens_verify_and_are_allowed() {
    let generation = fixture::generation();
    let mut all = LocationSet::default();
    for index in 0..fedauthz::extract::MAX_LOCATIONS {
        all.insert(index);
    }
    for (id, _, _) in ISSUERS {
        let token = fixture::token_for(id);
        let verified = generation
            .pipeline
            .issuers()
            .verify(&token, all, NOW)
            .unwrap_or_else(|failure| panic!("{id}: {:?}", failure.rejection));
        assert_eq!(&*verified.issuer.id, id);
        let header = if id == "alb" {
            "x-amzn-oidc-data"
        } else {
            "authorization"
        };
        let value = if id == "alb" {
            token.clone()
        } else {
            format!("Bearer {token}")
        };
        let mut text = format!("GET api.fuzz.example /orders/1\n{header}: {value}");
        text.push('\n');
        let request = targets::parse_headers(&text);
        let headers = fedauthz::service::RequestHeaders::of(&request);
        let checked =
            generation
                .pipeline
                .check(&headers, &fedauthz::service::request_facts(&request), NOW);
        assert!(
            matches!(checked.decision, Decision::Allow(Some(_))),
            "{id}: {:?}",
            checked.decision
        );
    }
}

#[test]
fn the_signed_seeds_of_each_issuer_verify() {
    // `verify_signed` seeds named valid-<issuer> must verify once signed: otherwise the
    // fuzzer would start below claim validation.
    let registry = fixture::generation().pipeline.issuers();
    let mut all = LocationSet::default();
    for index in 0..fedauthz::extract::MAX_LOCATIONS {
        all.insert(index);
    }
    let dir = fuzz_dir().join("seeds").join("verify_signed");
    for (id, _, _) in ISSUERS {
        let data = std::fs::read(dir.join(format!("valid-{id}"))).expect("seed");
        let (header, payload) = targets::signed_parts(&data);
        let token = fixture::sign_token(header, payload);
        assert!(registry.verify(&token, all, NOW).is_ok(), "{id}");
    }
}

#[test]
fn write_seeds() {
    if std::env::var_os("FEDAUTHZ_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    for (target, seeds) in seeds::all() {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).expect("seed dir");
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).expect("write seed");
        }
    }
}
