//! Tests of the job records (`records.rs`): a job reads back running, then done, for its
//! owner only; ids that are not ours and damaged audio read as nothing.
use super::*;
use crate::synth::SynthError;

fn records(dir: &Path) -> (Arc<JobRecords>, RecordWriter) {
    let (queue, inbox) = mpsc::channel(8);
    let records = Arc::new(JobRecords {
        dir: Some(dir.to_path_buf()),
        redis: None,
        keep: Duration::from_secs(600),
        queue,
        writes: Arc::new(AtomicUsize::new(0)),
    });
    let writer = RecordWriter {
        records: records.clone(),
        inbox: Mutex::new(Some(inbox)),
    };
    (records, writer)
}

async fn settle(records: &JobRecords) {
    while records.writes_in_flight() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_job_reads_back_running_then_done_for_its_owner_only() {
    let dir = tempfile::tempdir().expect("dir");
    let (records, writer) = records(dir.path());
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move { writer.start(shutdown).await });
    let id = "0123456789abcdef0123456789abcdef";
    records.created(id, "ip:10.0.0.1");
    settle(&records).await;
    assert!(matches!(
        records.load(id, "ip:10.0.0.1").await,
        Some(JobStatus::Running)
    ));
    assert!(
        records.load(id, "ip:10.0.0.2").await.is_none(),
        "another caller's job"
    );
    let wav = Bytes::from(cosygate_wav::pcm16_to_wav(&[0u8; 480], 24000).expect("wav"));
    let answer = Synthesized {
        wav: wav.clone(),
        source: Source::Backend("127.0.0.1:50000".parse().expect("addr")),
        degraded: false,
        approximate: None,
        created: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
        key: CacheKey::from_hex(&"ab".repeat(32)),
    };
    records.finished(id, "ip:10.0.0.1", &Ok(answer.clone()));
    settle(&records).await;
    match records.load(id, "ip:10.0.0.1").await {
        Some(JobStatus::Done(Ok(back))) => {
            assert_eq!(back.wav, wav);
            assert_eq!(back.source, answer.source);
            assert_eq!(back.created, answer.created);
            assert_eq!(back.key, answer.key);
        }
        _ => panic!("the answer reads back"),
    }
    let failed = "fedcba9876543210fedcba9876543210";
    let error = JobFailed::Synth(SynthError::NoBackend { pool: "p".into() });
    records.finished(failed, "o", &Err(error.clone()));
    settle(&records).await;
    assert!(matches!(records.load(failed, "o").await, Some(JobStatus::Done(Err(e))) if e == error));
    records.removed(failed);
    settle(&records).await;
    assert!(records.load(failed, "o").await.is_none());
}

#[tokio::test]
async fn ids_that_are_not_ours_and_damaged_audio_read_as_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let (records, _writer) = records(dir.path());
    for bad in [
        "../../etc/passwd",
        "0123",
        "0123456789ABCDEF0123456789ABCDEF",
        "*",
    ] {
        assert!(records.load(bad, "o").await.is_none(), "{bad}");
    }
    let id = "00000000000000000000000000000001";
    let record = Record {
        owner: "o".into(),
        outcome: Some(Ok(AnswerMeta {
            source: SourceRecord::Fallback,
            degraded: true,
            approximate: None,
            created_unix_ms: 0,
            key: None,
            wav_sha256: "00".repeat(32),
        })),
    };
    let json = serde_json::to_vec(&record).expect("json");
    write_file(dir.path(), id, &json, Some(b"RIFF not the audio we hashed")).expect("write");
    assert!(
        records.load(id, "o").await.is_none(),
        "a WAV that does not match its digest"
    );
}
