//! Converting straight from a Hugging Face repo, against a local stand-in for the Hub on 127.0.0.1
//! (no test touches the network): the standard cache is filled and reused, offline mode works from
//! it, and a missing repo, a gated repo, a vanished file or a dropped connection give an error naming
//! the repo and file with no output written.

mod convert_support;

use std::path::Path;

use bitnet_convert::{ConvertOptions, HubOptions, SourceSpec, convert};
use bitnet_format::{BitnetFile, Source};
use convert_support::hub::{MockHub, MockRepo};
use convert_support::*;

const REPO: &str = "microsoft/bitnet-b1.58-2B-4T";

fn hub_options(hub: &MockHub, cache: &Path) -> HubOptions {
    HubOptions {
        endpoint: hub.endpoint(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
        progress: false,
        retries: 0,
    }
}

fn hub_convert(
    repo: &str,
    hub_options: HubOptions,
    out: &Path,
) -> Result<bitnet_convert::ConvertReport, bitnet_convert::ConvertError> {
    let mut o = ConvertOptions::new(
        SourceSpec::Hub {
            repo: repo.into(),
            revision: "main".into(),
        },
        out,
    );
    o.hub = hub_options;
    convert(&o)
}

fn repo() -> MockRepo {
    MockRepo::from_dir(REPO, &fixture("bitnet-2b4t"))
}

/// The files a conversion of the 2B-4T fixture fetches (and nothing else of the repo).
const FETCHED: [&str; 6] = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
];

#[test]
fn a_repo_is_downloaded_once_into_the_cache_and_converted() {
    let hub = MockHub::start(vec![repo()]);
    let cache = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("hub.bitnet");
    let report = hub_convert(REPO, hub_options(&hub, cache.path()), &out).unwrap();
    assert_eq!(report.family, "bitnet-2b4t");

    let mut downloaded: Vec<String> = hub
        .downloads()
        .iter()
        .map(|p| p.rsplit('/').next().unwrap().to_string())
        .collect();
    downloaded.sort();
    assert_eq!(
        downloaded, FETCHED,
        "only the checkpoint's own files are fetched"
    );

    // The file records the repo and the commit the Hub resolved "main" to, and holds the same
    // tensors as a conversion of the directory.
    let file = BitnetFile::open(&out).unwrap();
    assert_eq!(
        file.header().provenance.source,
        Source::HuggingFace {
            repo: REPO.into(),
            revision: repo().sha
        }
    );
    let local = out_dir.path().join("local.bitnet");
    convert_dir(&fixture("bitnet-2b4t"), &local);
    let local = BitnetFile::open(&local).unwrap();
    for t in local.tensors() {
        assert_eq!(
            file.tensor(&t.name).unwrap().data,
            local.view(t).data,
            "{}",
            t.name
        );
    }

    // The standard cache layout: models--owner--name/{refs/main, snapshots/<sha>/<file>}.
    let repo_dir = cache.path().join("models--microsoft--bitnet-b1.58-2B-4T");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        repo().sha
    );
    assert!(
        repo_dir
            .join("snapshots")
            .join(repo().sha)
            .join("model.safetensors")
            .is_file()
    );

    // A second run downloads nothing: one request for the repository information, no file bytes.
    let before = hub.requests().len();
    let again = out_dir.path().join("again.bitnet");
    hub_convert(REPO, hub_options(&hub, cache.path()), &again).unwrap();
    let new: Vec<_> = hub.requests()[before..].to_vec();
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(new[0].path.starts_with("/api/models/"), "{new:?}");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());

    // Offline, from the warm cache: no request at all, the same file.
    let before = hub.requests().len();
    let offline = out_dir.path().join("offline.bitnet");
    let mut options = hub_options(&hub, cache.path());
    options.offline = true;
    hub_convert(REPO, options, &offline).unwrap();
    assert_eq!(hub.requests().len(), before);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&offline).unwrap()
    );
}

#[test]
fn offline_with_a_cold_cache_is_a_clear_error() {
    let hub = MockHub::start(vec![repo()]);
    let cache = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("m.bitnet");
    let mut options = hub_options(&hub, cache.path());
    options.offline = true;
    let e = hub_convert(REPO, options, &out).unwrap_err().to_string();
    assert!(e.contains("HF_HUB_OFFLINE") && e.contains(REPO), "{e}");
    assert!(e.contains(&cache.path().display().to_string()), "{e}");
    assert!(hub.requests().is_empty());
    assert!(dir_entries(out_dir.path()).is_empty());
}

#[test]
fn a_missing_repo_or_file_is_named() {
    let mut vanished = repo();
    vanished.id = "someone/vanishing".into();
    vanished.vanished_file = Some("tokenizer.json".into());
    let hub = MockHub::start(vec![repo(), vanished]);
    let cache = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("m.bitnet");

    let e = hub_convert(
        "nobody/no-such-model",
        hub_options(&hub, cache.path()),
        &out,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("nobody/no-such-model") && e.contains("not found"),
        "{e}"
    );

    let e = hub_convert("someone/vanishing", hub_options(&hub, cache.path()), &out)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("someone/vanishing") && e.contains("tokenizer.json") && e.contains("not found"),
        "{e}"
    );
    assert!(dir_entries(out_dir.path()).is_empty());
}

#[test]
fn a_gated_repo_needs_a_token() {
    let mut gated = repo();
    gated.gated_token = Some("hf_secret".into());
    let hub = MockHub::start(vec![gated]);
    let cache = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("m.bitnet");

    let e = hub_convert(REPO, hub_options(&hub, cache.path()), &out)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(REPO)
            && e.contains("config.json")
            && e.contains("401")
            && e.contains("HF_TOKEN"),
        "{e}"
    );
    assert!(dir_entries(out_dir.path()).is_empty());

    let mut options = hub_options(&hub, cache.path());
    options.token = Some("hf_secret".into());
    hub_convert(REPO, options, &out).unwrap();
    assert!(
        hub.requests()
            .iter()
            .filter(|r| r.is_download())
            .all(|r| r.authorization.as_deref() == Some("Bearer hf_secret"))
    );
}

#[test]
fn a_connection_dropped_mid_file_is_named_and_leaves_no_output() {
    let mut dropping = repo();
    dropping.drop_file = Some("model.safetensors".into());
    let hub = MockHub::start(vec![dropping]);
    let cache = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("m.bitnet");
    let e = hub_convert(REPO, hub_options(&hub, cache.path()), &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains(REPO) && e.contains("model.safetensors"), "{e}");
    assert!(dir_entries(out_dir.path()).is_empty());
    // Nothing half-downloaded is taken for the file.
    let snapshot = cache
        .path()
        .join("models--microsoft--bitnet-b1.58-2B-4T/snapshots")
        .join(repo().sha);
    assert!(!snapshot.join("model.safetensors").exists());

    // The next run, with the connection fixed, resumes into the same cache and succeeds.
    drop(hub);
    let hub = MockHub::start(vec![repo()]);
    hub_convert(REPO, hub_options(&hub, cache.path()), &out).unwrap();
    BitnetFile::open(&out).unwrap().verify().unwrap();
}
