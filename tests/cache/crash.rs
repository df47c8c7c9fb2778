//! Crash safety of the disk tier under SIGKILL. The tier commits an entry by one rename of a
//! fsynced temp file (`<path>/v2/<2 hex>/.<key>.<random>.tmp` → `<key>.entry`), so a gateway
//! killed with stores half written must come back with every committed entry served whole, byte
//! for byte what the backend made, no temp file ever served, and no file it cannot read. All of
//! it is checked from outside: the answers' headers and bytes, and the documented layout.

use crate::common::gateway::{eventually, pool_yaml, Gateway};
use crate::common::sim::Sim;
use crate::support::{client, read_entry, send_to, sft, sha256_hex, try_send_to, walk, Reply};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The texts asked for: distinct, and long enough for WAVs of 200-490 KB.
const TEXTS: usize = 40;

/// Paced so that 40 syntheses in waves of `max_concurrency: 4` take over a second: a kill at the
/// first committed entry lands with stores in progress and requests still queued.
const PACED: &[&str] = &["--rtf", "0.02", "--first-chunk-ms", "5"];

fn texts() -> Vec<String> {
    (0..TEXTS)
        .map(|i| format!("Crash line {i}:{}", " word".repeat(12 + i / 2)))
        .collect()
}

/// A disk cache at `disk`, four syntheses at a time, and a queue that never turns a waiting
/// request into a 202 job.
fn conf(sim: &Sim, disk: &Path) -> String {
    format!(
        "  cache: {{ disk: {{ path: {} }} }}\n{}",
        disk.display(),
        pool_yaml(
            "cosyvoice_fastapi",
            &[sim.addr()],
            "      max_concurrency: 4\n      queue: { max_wait: 60s, async_after: 60s }\n"
        )
    )
}

/// The disk tier's files by the README's layout: keys with a committed entry, keys with a temp
/// file (a write in progress), and any other file.
#[derive(Debug, Default)]
struct Listing {
    entries: HashSet<String>,
    temps: HashSet<String>,
    other: Vec<PathBuf>,
}

fn is_key(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn list(root: &Path) -> Listing {
    let mut listing = Listing::default();
    for path in walk(root) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let shard = path.parent().and_then(Path::file_name).and_then(|n| n.to_str());
        let in_v2 = path
            .parent()
            .and_then(Path::parent)
            .is_some_and(|d| d == root.join("v2"));
        let in_its_shard = |key: &str| in_v2 && is_key(key) && shard == Some(&key[..2]);
        if let Some(key) = name.strip_suffix(".entry").filter(|k| in_its_shard(k)) {
            listing.entries.insert(key.to_string());
        } else if let Some(key) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .and_then(|n| n.split('.').next())
            .filter(|k| in_its_shard(k))
        {
            listing.temps.insert(key.to_string());
        } else {
            listing.other.push(path);
        }
    }
    listing
}

/// Sends every text at once to `url` (with `headers`); the answers in the order of `texts`.
async fn all_at_once(url: &str, texts: &[String], headers: &'static [(&str, &str)]) -> Vec<Reply> {
    let c = client();
    let tasks: Vec<_> = texts
        .iter()
        .map(|t| {
            let (c, url, body) = (c.clone(), url.to_string(), sft(t));
            tokio::spawn(async move { send_to(&c, &url, &body, headers).await })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.expect("task"));
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_store_leaves_only_whole_entries_and_serves_no_temp_file() {
    let sim = Sim::start(PACED);
    let disk = tempfile::tempdir().expect("temp dir");
    let root = disk.path();
    let conf = conf(&sim, root);
    let texts = texts();

    // Run 1: every text a MISS at once; SIGKILL as soon as the first entry is committed.
    let mut gw = Gateway::start(&conf);
    let (c, url) = (client(), gw.url("/generate"));
    let tasks: Vec<_> = texts
        .iter()
        .map(|t| {
            let (c, url, body) = (c.clone(), url.clone(), sft(t));
            tokio::spawn(async move { try_send_to(&c, &url, &body, &[]).await.ok() })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while list(root).entries.is_empty() {
        assert!(Instant::now() < deadline, "no entry committed within 30 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    gw.kill9();
    let at_kill = list(root);
    let mut first_run = Vec::new();
    for t in tasks {
        first_run.push(t.await.expect("task"));
    }
    let answered = first_run.iter().flatten().count();
    eprintln!(
        "killed with {answered} of {TEXTS} answered, {} entries committed, {} temp files",
        at_kill.entries.len(),
        at_kill.temps.len()
    );
    for r in first_run.iter().flatten() {
        r.expect("MISS");
    }
    assert!(at_kill.other.is_empty(), "unexpected files: {:?}", at_kill.other);
    assert!(
        !at_kill.entries.is_empty() && at_kill.entries.len() < TEXTS,
        "the kill landed mid-run: {} of {TEXTS} entries committed",
        at_kill.entries.len()
    );

    // Run 2, on the same directory: every text again, then each as the backend makes it
    // (no-store, a BYPASS: the sim is deterministic).
    let gw = Gateway::start(&conf);
    let url = gw.url("/generate");
    let second = all_at_once(&url, &texts, &[]).await;
    let reference = all_at_once(&url, &texts, &[("Cache-Control", "no-store")]).await;
    let mut by_key = HashMap::new();
    let mut disk_hits = HashSet::new();
    for (((text, r), backend), first) in texts.iter().zip(&second).zip(&reference).zip(&first_run) {
        backend.expect("BYPASS");
        if let Some(first) = first {
            assert_eq!(
                first.body, backend.body,
                "{text}: run 1 answered the backend's bytes"
            );
            assert_eq!(first.key, r.key, "{text}: one key in both runs");
        }
        if r.cache == "HIT" {
            r.expect("HIT");
            assert_eq!(
                r.tier.as_deref(),
                Some("disk"),
                "{text}: a fresh process hits only the disk"
            );
            disk_hits.insert(r.key());
        } else {
            r.expect("MISS");
        }
        assert_eq!(
            r.body, backend.body,
            "{text}: {} is the backend's exact bytes",
            r.cache
        );
        by_key.insert(r.key(), backend.body.clone());
    }
    assert_eq!(by_key.len(), TEXTS, "a key per text");
    assert!(!disk_hits.is_empty(), "at least one disk HIT");
    assert_eq!(
        disk_hits, at_kill.entries,
        "the disk HITs are exactly the entries committed before the kill: none lost, no temp file served"
    );
    let temp_only = at_kill.temps.difference(&at_kill.entries).count();
    eprintln!(
        "after the restart: {} disk HITs, {} MISSes ({temp_only} of them with a temp file left by the kill)",
        disk_hits.len(),
        TEXTS - disk_hits.len()
    );
    assert!(
        at_kill.temps.iter().all(|k| by_key.contains_key(k)),
        "every temp file was a write of one of our texts: {:?}",
        at_kill.temps
    );

    // Once run 2's stores are done, every file parses: an entry per text, each its backend's
    // WAV after a header that describes it; the only temp files left are the kill's (younger
    // than the tier's stale limit, so kept for a later start's scan).
    eventually(Duration::from_secs(30), "every text stored on disk", || {
        std::future::ready(list(root).entries.len() == TEXTS)
    })
    .await;
    let after = list(root);
    assert!(after.other.is_empty(), "unexpected files: {:?}", after.other);
    assert!(
        after.temps.is_subset(&at_kill.temps),
        "new temp files left: {:?}",
        after.temps
    );
    for (key, wav) in &by_key {
        let (meta, stored) = read_entry(root, key).unwrap_or_else(|| panic!("{key}: an entry that parses"));
        assert_eq!(&stored, wav, "{key}: the stored WAV is the backend's");
        assert_eq!(meta["size"], wav.len() as u64, "{key}");
        assert_eq!(meta["sha256"], sha256_hex(wav), "{key}");
    }
    assert!(
        by_key.values().all(|wav| wav.len() > 150_000),
        "WAVs big enough for a store to take a while"
    );
}
