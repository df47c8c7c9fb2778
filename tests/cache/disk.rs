//! The disk tier seen from outside: TTL expiry, LRU eviction by size (rebuilt after a restart),
//! entries surviving a restart byte-exact, and a damaged entry re-synthesized, never served.

use crate::common::gateway::{eventually, Gateway};
use crate::common::sim::Sim;
use crate::support::{
    cached, client, disk_file, on_disk, read_entry, requests, send, send_to, settled, sft, sha256_hex,
    stored, FAST,
};
use std::time::{Duration, Instant};

#[tokio::test]
async fn entries_expire_ttl_after_synthesis() {
    let sim = Sim::start(FAST);
    let disk = tempfile::tempdir().expect("temp dir");
    let gw = Gateway::start(&cached(
        &sim,
        &format!("{{ ttl: 1s, disk: {{ path: {} }} }}", disk.path().display()),
    ));
    let body = sft("This line is only good for a second.");
    let miss = send(&gw, &body, &[]).await;
    let synthesized = Instant::now();
    miss.expect("MISS");
    let hit = send(&gw, &body, &[]).await;
    hit.expect("HIT");
    assert_eq!(hit.age, Some(0));
    assert_eq!(requests(&sim).await, 1);

    // Poll until the entry has expired (from memory and from disk): the first MISS re-synthesizes.
    let (c, url) = (client(), gw.url("/generate"));
    eventually(
        Duration::from_secs(5),
        "a MISS once the 1 s TTL has passed",
        || {
            let (c, url, body) = (c.clone(), url.clone(), body.clone());
            async move {
                let r = send_to(&c, &url, &body, &[]).await;
                assert_eq!(r.status, 200);
                if r.cache == "HIT" {
                    assert!(
                        r.age.unwrap() <= 1,
                        "an expired entry was served: Age {:?}",
                        r.age
                    );
                }
                r.cache == "MISS"
            }
        },
    )
    .await;
    assert!(
        synthesized.elapsed() >= Duration::from_millis(900),
        "expired after {:?}, before the TTL",
        synthesized.elapsed()
    );
    assert_eq!(requests(&sim).await, 2, "exactly one re-synthesis");
    let r = send(&gw, &body, &[]).await;
    r.expect("HIT");
    assert_eq!(r.body, miss.body);
    assert_eq!(requests(&sim).await, 2);
}

// ---------------------------------------------------------------------------------------------
// 5. LRU eviction on disk

#[tokio::test]
async fn disk_evicts_the_least_recently_used_entry() {
    let sim = Sim::start(FAST);
    let disk = tempfile::tempdir().expect("temp dir");
    let conf = |max: u64| {
        cached(
            &sim,
            &format!(
                "{{ memory: {{ max: 1KiB }}, disk: {{ path: {}, max: {max} }} }}",
                disk.path().display()
            ),
        )
    };
    // Texts of one length: the sim's audio length follows the text, so the entries are equal.
    let (a, b, c) = (
        sft("Entry number A."),
        sft("Entry number B."),
        sft("Entry number C."),
    );

    // Measure an entry with a roomy disk, storing A then B.
    let gw = Gateway::start(&conf(1 << 30));
    let ra = send(&gw, &a, &[]).await;
    ra.expect("MISS");
    stored(disk.path(), &ra.key()).await;
    let rb = send(&gw, &b, &[]).await;
    rb.expect("MISS");
    stored(disk.path(), &rb.key()).await;
    let size = ra.content_length.unwrap();
    assert_eq!(rb.content_length, Some(size), "equal entries");
    drop(gw);

    // Room for two entries, not three. A fresh process: its memory tier is empty, so a hit
    // comes from the disk and marks the entry used (its file's mtime).
    let cap = size * 5 / 2;
    let gw = Gateway::start(&conf(cap));
    let touched = send(&gw, &a, &[]).await;
    touched.expect("HIT");
    assert_eq!(touched.body, ra.body);
    let rc = send(&gw, &c, &[]).await;
    rc.expect("MISS");
    assert_eq!(rc.content_length, Some(size));
    assert_eq!(requests(&sim).await, 3);
    // Storing C (after its answer) pushed out B, the least recently used.
    // The store renames C's file into place, then evicts: wait for both.
    stored(disk.path(), &rc.key()).await;
    settled("B evicted", || !on_disk(disk.path(), &rb.key())).await;
    assert!(on_disk(disk.path(), &ra.key()), "A was used recently: kept");
    assert!(on_disk(disk.path(), &rc.key()), "C was just stored");
    drop(gw);

    // After a restart (LRU order rebuilt from the mtimes): A is a HIT with its bytes, the
    // untouched B is synthesized again, and storing it evicts C, now the least recently used.
    let gw = Gateway::start(&conf(cap));
    let a_again = send(&gw, &a, &[]).await;
    a_again.expect("HIT");
    assert_eq!(a_again.body, ra.body);
    assert_eq!(requests(&sim).await, 3);
    let b_again = send(&gw, &b, &[]).await;
    b_again.expect("MISS");
    assert_eq!(b_again.body, rb.body);
    assert_eq!(requests(&sim).await, 4);
    // The store renames B's file into place, then evicts: wait for both.
    stored(disk.path(), &rb.key()).await;
    settled("C evicted", || !on_disk(disk.path(), &rc.key())).await;
    assert!(on_disk(disk.path(), &ra.key()) && on_disk(disk.path(), &rb.key()));
    let wav_bytes: u64 = [&ra, &rb, &rc]
        .iter()
        .filter_map(|r| read_entry(disk.path(), &r.key()))
        .map(|(_, wav)| wav.len() as u64)
        .sum();
    assert!(
        wav_bytes <= cap,
        "{wav_bytes} bytes of WAV on disk, over the cap {cap}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Restarts

#[tokio::test]
async fn the_disk_tier_survives_a_restart() {
    let sim = Sim::start(FAST);
    let disk = tempfile::tempdir().expect("temp dir");
    let conf = cached(
        &sim,
        &format!("{{ disk: {{ path: {} }} }}", disk.path().display()),
    );
    let body = sft("Saved for tomorrow.");

    let gw = Gateway::start(&conf);
    let miss = send(&gw, &body, &[]).await;
    miss.expect("MISS");
    // Answered first, stored after: once stored, a SIGKILL loses nothing.
    stored(disk.path(), &miss.key()).await;
    drop(gw);

    let gw = Gateway::start(&conf);
    let hit = send(&gw, &body, &[]).await;
    hit.expect("HIT");
    assert_eq!(
        (hit.key.clone(), hit.body.clone()),
        (miss.key.clone(), miss.body.clone())
    );
    assert_eq!(requests(&sim).await, 1, "no backend call after the restart");

    // The entry on disk is exactly the WAV that was served, after a header describing it.
    let (meta, wav) = read_entry(disk.path(), &miss.key()).expect("the entry file");
    assert_eq!(wav, miss.body);
    assert_eq!(meta["size"], miss.body.len() as u64);
    assert_eq!(meta["sha256"], sha256_hex(&miss.body));
}

// ---------------------------------------------------------------------------------------------
// 7. Damage on disk

#[tokio::test]
async fn a_damaged_disk_entry_is_resynthesized_never_served() {
    let sim = Sim::start(FAST);
    let disk = tempfile::tempdir().expect("temp dir");
    let conf = cached(
        &sim,
        &format!("{{ disk: {{ path: {} }} }}", disk.path().display()),
    );
    let body = sft("A bit will flip in this one.");

    let gw = Gateway::start(&conf);
    let good = send(&gw, &body, &[]).await;
    good.expect("MISS");
    stored(disk.path(), &good.key()).await;
    drop(gw);

    // Flip one bit of audio data (in the second half of the file, well past the entry's header
    // and the WAV's): same size, wrong checksum.
    let entry = disk_file(disk.path(), &good.key());
    let (_, wav) = read_entry(disk.path(), &good.key()).expect("the entry");
    assert_eq!(wav, good.body);
    let mut bytes = std::fs::read(&entry).expect("the entry file");
    let at = bytes.len() - (good.body.len() - 44) / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&entry, &bytes).expect("damage the WAV");

    let gw = Gateway::start(&conf);
    let r = send(&gw, &body, &[]).await;
    r.expect("MISS");
    assert_eq!(r.body, good.body, "the correct audio, synthesized again");
    assert_eq!(requests(&sim).await, 2, "one re-synthesis");
    settled("the entry is stored again", || {
        read_entry(disk.path(), &good.key()).is_some_and(|(_, wav)| wav == good.body)
    })
    .await;
    let hit = send(&gw, &body, &[]).await;
    hit.expect("HIT");
    assert_eq!(hit.body, good.body);
    drop(gw);

    // And from the disk after one more restart.
    let gw = Gateway::start(&conf);
    let hit = send(&gw, &body, &[]).await;
    hit.expect("HIT");
    assert_eq!(hit.body, good.body);
    assert_eq!(requests(&sim).await, 2);
}
