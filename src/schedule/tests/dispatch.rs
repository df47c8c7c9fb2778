//! Scheduler tests of dispatch: never more than `max_in_flight`, round robin on ties, most free
//! slots winning, fairness, a dropped ticket leaving, queue limits, `max_wait`, ETA, the admin
//! view, and random cancellations leaking nothing.

use super::*;

#[tokio::test(start_paused = true)]
async fn never_more_than_max_in_flight() {
    let s = Setup {
        backends: 3,
        max: 2,
        max_len: 200,
        ..Setup::default()
    }
    .build(&Health::default());
    let running: Arc<HashMap<SocketAddr, AtomicUsize>> =
        Arc::new((0..3).map(|i| (addr(i), AtomicUsize::new(0))).collect());
    let peak = Arc::new(AtomicUsize::new(0));
    let mut rng = StdRng::seed_from_u64(7);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let ticket = s.ticket(&format!("client{}", i % 7), Vec::new()).unwrap();
        let hold = Duration::from_millis(rng.random_range(1..50));
        let (s, running, peak) = (Arc::clone(&s), Arc::clone(&running), Arc::clone(&peak));
        tasks.push(tokio::spawn(async move {
            let slot = ticket.slot().await.unwrap();
            let now = running[&slot.addr()].fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            assert!(now <= 2, "{now} requests on {}", slot.addr());
            assert!(s.backends().iter().all(|b| b.inflight <= b.max_concurrency));
            sleep(hold).await;
            running[&slot.addr()].fetch_sub(1, Ordering::SeqCst);
            slot.succeeded();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!(s.queue_len(), 0);
    assert_eq!(inflight(&s), vec![0, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn ties_go_round_robin() {
    let s = Setup {
        backends: 3,
        max: 2,
        ..Setup::default()
    }
    .build(&Health::default());
    let mut picked = Vec::new();
    for _ in 0..6 {
        picked.push(slot(&s, "c", Vec::new()).await.addr()); // released at once
    }
    assert_eq!(picked, [0, 1, 2, 0, 1, 2].map(addr));
}

#[tokio::test(start_paused = true)]
async fn most_free_slots_win() {
    let s = Setup {
        backends: 3,
        max: 2,
        ..Setup::default()
    }
    .build(&Health::default());
    let a = slot(&s, "c", Vec::new()).await;
    let b = slot(&s, "c", Vec::new()).await;
    let c = slot(&s, "c", Vec::new()).await;
    let a2 = slot(&s, "c", Vec::new()).await;
    assert_eq!([a.addr(), b.addr(), c.addr(), a2.addr()], [0, 1, 2, 0].map(addr));
    // Free: A 0, B 1, C 1 → then C is released: C 2. Round robin would say B; C has more free.
    c.succeeded();
    assert_eq!(slot(&s, "c", Vec::new()).await.addr(), addr(2));
    drop((a, b, a2));
}

#[tokio::test(start_paused = true)]
async fn one_request_is_not_starved_by_a_hundred() {
    let s = Setup {
        max_len: 101,
        ..Setup::default()
    }
    .build(&Health::default());
    let held = slot(&s, "x", Vec::new()).await;
    let mut a: Vec<Ticket> = (0..100).map(|_| s.ticket("a", Vec::new()).unwrap()).collect();
    let b = s.ticket("b", Vec::new()).unwrap();
    assert_eq!(s.queue_len(), 101);
    assert_eq!(b.position(), Some(1));
    assert_eq!(a[1].position(), Some(2));

    drop(held); // dispatch 1: A's first request
    assert!(a[0].started() && !b.started());
    let first = a.remove(0).slot().await.unwrap();
    drop(first); // dispatch 2: B
    assert!(b.started());
    assert_eq!(b.position(), None);
    assert!(a.iter().all(|t| !t.started()));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_ticket_leaves_and_its_slot_goes_on() {
    let s = Setup::default().build(&Health::default());
    let held = slot(&s, "x", Vec::new()).await;
    let t1 = s.ticket("a", Vec::new()).unwrap();
    let t2 = s.ticket("b", Vec::new()).unwrap();
    let t3 = s.ticket("c", Vec::new()).unwrap();
    assert_eq!(s.queue_len(), 3);
    drop(t1);
    assert_eq!(s.queue_len(), 2);
    assert_eq!(t2.position(), Some(0));

    drop(held); // goes to t2, which never picks it up
    assert!(t2.started());
    assert_eq!(s.queue_len(), 1);
    drop(t2);
    assert!(t3.started(), "the granted slot went to the next waiter");
    assert_eq!(inflight(&s), vec![1]);
    let slot = t3.slot().await.unwrap();
    assert_eq!(slot.addr(), addr(0));
    drop(slot); // client went away: released, neither success nor failure
    assert_eq!(inflight(&s), vec![0]);
    assert_eq!(s.service_time(), Duration::from_secs(1));
    assert_eq!(circuit(&s, addr(0)), Circuit::Closed);
}

#[tokio::test(start_paused = true)]
async fn full_queue_refuses_with_retry_after() {
    let s = Setup {
        max_len: 2,
        ..Setup::default()
    }
    .build(&Health::default());
    let _held = slot(&s, "x", Vec::new()).await;
    let _t1 = s.ticket("a", Vec::new()).unwrap();
    let _t2 = s.ticket("b", Vec::new()).unwrap();
    match s.ticket("c", Vec::new()) {
        Err(QueueError::Full { retry_after }) => {
            assert!(retry_after > Duration::ZERO);
            // 1 s per request, one slot, two ahead plus this one.
            assert_eq!(retry_after, Duration::from_secs(3));
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(s.queue_len(), 2);
}

#[tokio::test(start_paused = true)]
async fn waiting_past_max_wait_times_out() {
    let s = Setup {
        max_wait: Duration::from_millis(50),
        ..Setup::default()
    }
    .build(&Health::default());
    let _held = slot(&s, "x", Vec::new()).await;
    let t = s.ticket("a", Vec::new()).unwrap();
    match t.slot().await {
        Err(QueueError::Timeout { waited }) => assert!(waited >= Duration::from_millis(50)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(s.queue_len(), 0);
}

#[tokio::test(start_paused = true)]
async fn eta_follows_position_and_measured_service_time() {
    let s = Setup {
        backends: 2,
        max: 2,
        ..Setup::default()
    }
    .build(&Health::default());
    // Default 1 s per request, 4 slots.
    assert_eq!(s.eta(0), Duration::from_millis(250));
    assert!(s.eta(0) < s.eta(1) && s.eta(1) < s.eta(10) && s.eta(10) < s.eta(100));

    let one = slot(&s, "c", Vec::new()).await;
    sleep(Duration::from_secs(3)).await;
    one.succeeded();
    assert_eq!(s.service_time(), Duration::from_secs(3));
    let two = slot(&s, "c", Vec::new()).await;
    sleep(Duration::from_secs(1)).await;
    two.succeeded();
    // EWMA, alpha 0.2: 3 + 0.2 * (1 - 3) = 2.6 s.
    assert_eq!(s.service_time().as_millis(), 2600);
    assert_eq!(s.eta(3).as_millis(), 2600);

    // Failed attempts do not feed the average.
    let three = slot(&s, "c", Vec::new()).await;
    sleep(Duration::from_secs(30)).await;
    three.failed();
    assert_eq!(s.service_time().as_millis(), 2600);
}

#[tokio::test(start_paused = true)]
async fn admin_view() {
    let health = Health::default();
    let s = Setup {
        backends: 2,
        max: 4,
        ..Setup::default()
    }
    .build(&health);
    health.set(addr(1), false);
    let _one = slot(&s, "c", Vec::new()).await;
    let view = s.backends();
    assert_eq!(
        view,
        vec![
            BackendView {
                addr: addr(0),
                healthy: true,
                circuit: Circuit::Closed,
                inflight: 1,
                max_concurrency: 4,
            },
            BackendView {
                addr: addr(1),
                healthy: false,
                circuit: Circuit::Closed,
                inflight: 0,
                max_concurrency: 4,
            },
        ]
    );
    let json = serde_json::to_string(&view[0]).unwrap();
    assert!(json.contains("\"circuit\":\"closed\""), "{json}");
}

/// Real threads, real clock: tickets abandoned at random moments (queued, granted, running)
/// never leak a slot or a queue entry, and the limit holds throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_cancellations_leak_nothing() {
    let s = Setup {
        backends: 2,
        max: 3,
        max_len: 400,
        ..Setup::default()
    }
    .build(&Health::default());
    let mut rng = StdRng::seed_from_u64(11);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let give_up = Duration::from_micros(rng.random_range(0..3000));
        let hold = Duration::from_micros(rng.random_range(0..500));
        let outcome = rng.random_range(0..3);
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let Ok(ticket) = s.ticket(&format!("c{}", i % 5), Vec::new()) else {
                return;
            };
            // Giving up drops the ticket wherever it is: queued, granted, or holding the slot.
            let _ = tokio::time::timeout(give_up, async {
                // NoBackend when both breakers happen to be open at once.
                let Ok(slot) = ticket.slot().await else {
                    return;
                };
                assert!(s.backends().iter().all(|b| b.inflight <= b.max_concurrency));
                sleep(hold).await;
                match outcome {
                    0 => slot.succeeded(),
                    1 => slot.failed(),
                    _ => drop(slot),
                }
            })
            .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.queue_len(), 0);
    assert_eq!(inflight(&s), vec![0, 0]);
}
