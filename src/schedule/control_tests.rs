//! Tests of the outside controls (the supervisor's): draining, slot limits, the failure streak.

use super::*;
use crate::config::ConfDuration;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9100 + i as u16))
}

fn sched(backends: usize, max: usize) -> Arc<Scheduler> {
    let queue = QueueConf {
        max_wait: ConfDuration(Duration::from_secs(3600)),
        ..QueueConf::default()
    };
    let breaker = BreakerConf {
        failures: 2,
        open_for: ConfDuration(Duration::from_secs(3600)),
    };
    let addrs: Vec<SocketAddr> = (0..backends).map(addr).collect();
    Scheduler::new("main", &addrs, max, &queue, &breaker, Arc::new(|_| true))
}

async fn slot(s: &Arc<Scheduler>) -> Slot {
    s.ticket("c", vec![]).unwrap().slot().await.unwrap()
}

fn inflight(s: &Scheduler) -> Vec<usize> {
    s.backends().iter().map(|b| b.inflight).collect()
}

#[tokio::test(start_paused = true)]
async fn a_slot_limit_caps_a_backend_and_none_lifts_it() {
    let s = sched(1, 4);
    s.set_slot_limit(addr(0), Some(1));
    let first = slot(&s).await;
    let waiting = s.ticket("c", vec![]).unwrap();
    s.dispatch();
    assert!(!waiting.started(), "the limit of 1 holds the second request back");
    assert_eq!(inflight(&s), vec![1]);
    s.set_slot_limit(addr(0), Some(2));
    assert!(waiting.started(), "raising the limit serves the waiter at once");
    let second = waiting.slot().await.unwrap();
    let third = s.ticket("c", vec![]).unwrap();
    assert!(!third.started());
    s.set_slot_limit(addr(0), None);
    assert!(third.started(), "no limit: all max_concurrency slots");
    assert_eq!(inflight(&s), vec![3]);
    assert_eq!(s.slot_override(addr(0)), Some((None, false)));
    drop((first, second, third));
}

#[tokio::test(start_paused = true)]
async fn a_limit_above_max_is_max_and_zero_is_one() {
    let s = sched(1, 2);
    s.set_slot_limit(addr(0), Some(100));
    let _a = slot(&s).await;
    let _b = slot(&s).await;
    assert!(!s.ticket("c", vec![]).unwrap().started());
    let s = sched(1, 2);
    s.set_slot_limit(addr(0), Some(0));
    let _a = slot(&s).await;
    assert!(!s.ticket("c", vec![]).unwrap().started());
}

#[tokio::test(start_paused = true)]
async fn a_limited_backend_shares_by_free_slots() {
    let s = sched(2, 4);
    s.set_slot_limit(addr(0), Some(1));
    let slots: Vec<Slot> = futures_util::future::join_all((0..5).map(|_| slot(&s))).await;
    assert_eq!(
        inflight(&s),
        vec![1, 4],
        "the warming backend takes one, the other all of its own"
    );
    assert!(!s.ticket("c", vec![]).unwrap().started());
    drop(slots);
}

#[tokio::test(start_paused = true)]
async fn a_draining_backend_gets_no_traffic() {
    let s = sched(2, 2);
    s.set_draining(addr(0), true);
    let slots: Vec<Slot> = futures_util::future::join_all((0..2).map(|_| slot(&s))).await;
    assert!(slots.iter().all(|sl| sl.addr() == addr(1)));
    let waiting = s.ticket("c", vec![]).unwrap();
    assert!(
        !waiting.started(),
        "the drained backend's free slots are not used"
    );
    s.set_draining(addr(0), false);
    assert!(waiting.started(), "undrained: served at once");
    assert_eq!(waiting.slot().await.unwrap().addr(), addr(0));
    drop(slots);
}

#[tokio::test(start_paused = true)]
async fn draining_the_only_backend_refuses_with_no_backend() {
    let s = sched(1, 2);
    let queued_behind = {
        let _busy: Vec<Slot> = futures_util::future::join_all((0..2).map(|_| slot(&s))).await;
        let t = s.ticket("c", vec![]).unwrap();
        s.set_draining(addr(0), true);
        t
    };
    assert!(matches!(queued_behind.slot().await, Err(QueueError::NoBackend)));
    assert!(matches!(s.ticket("c", vec![]), Err(QueueError::NoBackend)));
    s.set_draining(addr(0), false);
    assert!(s.ticket("c", vec![]).is_ok());
}

#[tokio::test(start_paused = true)]
async fn failures_in_a_row_are_counted_and_forgotten() {
    let s = sched(1, 1);
    slot(&s).await.failed();
    assert_eq!(s.consecutive_failures(addr(0)), 1);
    slot(&s).await.succeeded();
    assert_eq!(s.consecutive_failures(addr(0)), 0, "a success ends the streak");
    slot(&s).await.failed();
    slot(&s).await.failed();
    assert_eq!(s.consecutive_failures(addr(0)), 2);
    assert_eq!(
        s.backends()[0].circuit,
        Circuit::Open,
        "two failures open this breaker"
    );
    assert!(matches!(s.ticket("c", vec![]), Err(QueueError::NoBackend)));
    s.forget_failures(addr(0));
    assert_eq!(s.consecutive_failures(addr(0)), 0);
    assert_eq!(
        s.backends()[0].circuit,
        Circuit::Closed,
        "a restarted backend starts clean"
    );
    slot(&s).await.succeeded();
    drop(s.ticket("c", vec![]));
    assert_eq!(s.consecutive_failures(addr(9)), 0, "unknown addresses are 0");
    s.set_draining(addr(9), true);
    assert_eq!(s.slot_override(addr(9)), None);
}

#[tokio::test(start_paused = true)]
async fn an_inconclusive_slot_counts_nothing_until_blamed() {
    let s = sched(1, 4);
    for _ in 0..5 {
        slot(&s).await.inconclusive();
    }
    assert_eq!(s.consecutive_failures(addr(0)), 0, "no verdict, no failure");
    assert_eq!(s.backends()[0].circuit, Circuit::Closed);
    assert_eq!(inflight(&s), vec![0], "the slots were released");
    s.record_failure(addr(0));
    assert_eq!(s.consecutive_failures(addr(0)), 1);
    s.record_failure(addr(0));
    assert_eq!(
        s.backends()[0].circuit,
        Circuit::Open,
        "two blamed failures open a 2-failure breaker"
    );
}

#[tokio::test(start_paused = true)]
async fn a_ticket_waits_no_longer_than_the_request_deadline() {
    let s = sched(1, 1);
    let held = slot(&s).await;
    let ticket = s.ticket("c", vec![]).unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let started = tokio::time::Instant::now();
    let r = ticket.slot_until(until).await;
    assert!(matches!(r, Err(QueueError::Timeout { .. })), "{r:?}");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(5),
        "the deadline, not max_wait (1 h)"
    );
    drop(held);
}
