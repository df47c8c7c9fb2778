//! Scheduler tests: slot limits, backend choice, fairness, cancellation, queue limits, breakers,
//! avoid lists and ETA. Tokio's clock is paused (auto-advancing), so every run is the same.

use super::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::time::sleep;

const OPEN_FOR: Duration = Duration::from_secs(10);

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16))
}

/// Backends marked down fail their health check.
#[derive(Clone, Default)]
struct Health(Arc<Mutex<HashSet<SocketAddr>>>);

impl Health {
    fn set(&self, a: SocketAddr, healthy: bool) {
        let mut down = self.0.lock();
        if healthy {
            down.remove(&a);
        } else {
            down.insert(a);
        }
    }

    fn check(&self) -> HealthFn {
        let down = Arc::clone(&self.0);
        Arc::new(move |a| !down.lock().contains(&a))
    }
}

struct Setup {
    backends: usize,
    max: usize,
    max_len: usize,
    max_wait: Duration,
    failures: u32,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            backends: 1,
            max: 1,
            max_len: 64,
            max_wait: Duration::from_secs(3600),
            failures: 3,
        }
    }
}

impl Setup {
    fn build(self, health: &Health) -> Arc<Scheduler> {
        let queue = QueueConf {
            max_len: self.max_len,
            max_wait: crate::config::ConfDuration(self.max_wait),
            ..QueueConf::default()
        };
        let breaker = BreakerConf {
            failures: self.failures,
            open_for: crate::config::ConfDuration(OPEN_FOR),
        };
        let addrs: Vec<SocketAddr> = (0..self.backends).map(addr).collect();
        Scheduler::new("main", &addrs, self.max, &queue, &breaker, health.check())
    }
}

async fn slot(s: &Arc<Scheduler>, client: &str, avoid: Vec<SocketAddr>) -> Slot {
    s.ticket(client, avoid).unwrap().slot().await.unwrap()
}

fn circuit(s: &Scheduler, a: SocketAddr) -> Circuit {
    s.backends().iter().find(|b| b.addr == a).unwrap().circuit
}

fn inflight(s: &Scheduler) -> Vec<usize> {
    s.backends().iter().map(|b| b.inflight).collect()
}

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
