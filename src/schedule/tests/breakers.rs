//! Scheduler tests of breakers and backend choice under failure: open, probe, close or reopen;
//! an abandoned probe; avoid lists; no backend when all are unusable; a backend coming back.

use super::*;

#[tokio::test(start_paused = true)]
async fn breaker_opens_probes_and_closes_or_reopens() {
    let s = Setup {
        backends: 2,
        max: 2,
        ..Setup::default()
    }
    .build(&Health::default());
    let (a, b) = (addr(0), addr(1));
    for _ in 0..3 {
        let slot = slot(&s, "c", vec![b]).await;
        assert_eq!(slot.addr(), a);
        slot.failed();
    }
    assert_eq!(circuit(&s, a), Circuit::Open);
    // Open: skipped even by a request that would rather avoid B.
    for _ in 0..3 {
        assert_eq!(slot(&s, "c", vec![b]).await.addr(), b);
    }

    sleep(OPEN_FOR).await;
    assert_eq!(circuit(&s, a), Circuit::HalfOpen);
    let probe = slot(&s, "c", vec![b]).await;
    assert_eq!(probe.addr(), a);
    assert!(probe.is_probe());
    // One probe only: the next requests go to B.
    let other = slot(&s, "c", Vec::new()).await;
    assert_eq!(other.addr(), b);
    drop(other);
    probe.failed();
    assert_eq!(circuit(&s, a), Circuit::Open);
    assert_eq!(slot(&s, "c", vec![b]).await.addr(), b);

    sleep(OPEN_FOR).await;
    let probe = slot(&s, "c", vec![b]).await;
    assert!(probe.is_probe());
    probe.succeeded();
    assert_eq!(circuit(&s, a), Circuit::Closed);
    let x = slot(&s, "c", vec![b]).await;
    let y = slot(&s, "c", vec![b]).await;
    assert_eq!((x.addr(), y.addr()), (a, a));
    assert!(!x.is_probe() && !y.is_probe());
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_probe_lets_the_next_one_go() {
    let s = Setup {
        failures: 1,
        ..Setup::default()
    }
    .build(&Health::default());
    slot(&s, "c", Vec::new()).await.failed();
    assert!(matches!(s.ticket("c", Vec::new()), Err(QueueError::NoBackend)));
    sleep(OPEN_FOR).await;
    let probe = slot(&s, "c", Vec::new()).await;
    assert!(probe.is_probe());
    drop(probe);
    let probe = slot(&s, "c", Vec::new()).await;
    assert!(probe.is_probe());
}

#[tokio::test(start_paused = true)]
async fn avoid_list_prefers_an_untried_backend() {
    let health = Health::default();
    let s = Setup {
        backends: 2,
        max: 1,
        ..Setup::default()
    }
    .build(&health);
    let (a, b) = (addr(0), addr(1));
    // The round-robin cursor points at A; the retry goes to B.
    assert_eq!(slot(&s, "c", vec![a]).await.addr(), b);

    // B busy: the retry waits for B rather than taking A again, and others are not held up.
    let on_b = slot(&s, "x", vec![a]).await;
    assert_eq!(on_b.addr(), b);
    let retry = s.ticket("r", vec![a]).unwrap();
    assert!(!retry.started());
    let other = s.ticket("o", Vec::new()).unwrap();
    assert!(
        other.started(),
        "a free slot on A goes to the next waiter that may use it"
    );
    let on_a = other.slot().await.unwrap();
    assert_eq!(on_a.addr(), a);
    drop(on_b);
    assert_eq!(retry.slot().await.unwrap().addr(), b);
    drop(on_a);

    // B unhealthy: A is the only usable backend, so the retry takes it.
    health.set(b, false);
    assert_eq!(slot(&s, "c", vec![a]).await.addr(), a);
}

#[tokio::test(start_paused = true)]
async fn no_backend_when_all_are_unusable() {
    let health = Health::default();
    let s = Setup {
        backends: 2,
        failures: 1,
        ..Setup::default()
    }
    .build(&health);
    health.set(addr(0), false);
    health.set(addr(1), false);
    assert!(matches!(s.ticket("c", Vec::new()), Err(QueueError::NoBackend)));
    assert_eq!(s.queue_len(), 0);

    // Queued waiters are told at once when the last usable backend goes away.
    health.set(addr(0), true);
    let held = slot(&s, "x", Vec::new()).await;
    let waiting = s.ticket("c", Vec::new()).unwrap();
    held.failed(); // opens A's breaker (failures: 1)
    assert!(matches!(waiting.slot().await, Err(QueueError::NoBackend)));
    assert_eq!(s.queue_len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_periodic_dispatch_serves_a_backend_that_came_back() {
    let health = Health::default();
    let s = Setup {
        backends: 2,
        ..Setup::default()
    }
    .build(&health);
    health.set(addr(1), false);
    let held = slot(&s, "x", Vec::new()).await;
    let waiting = s.ticket("c", Vec::new()).unwrap();
    assert!(!waiting.started());
    health.set(addr(1), true);
    tokio::spawn(Arc::clone(&s).dispatch_forever(Duration::from_millis(100)));
    let got = waiting.slot().await.unwrap();
    assert_eq!(got.addr(), addr(1));
    drop(held);
}
