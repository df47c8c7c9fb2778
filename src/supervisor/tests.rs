//! The watch loop, effects included, without processes to restart: the passive failure signal
//! triggers restarts, a failing command backs off, the hourly cap ends in `failed`, and
//! `states()` shows it all. The rules alone are in `machine_tests.rs`.

use super::*;
use crate::backend::BackendPool;
use crate::config::GatewayConf;
use std::time::Duration;

fn gateway_conf(restart: &str) -> GatewayConf {
    let yaml = format!(
        "listen: [ {{ addr: 127.0.0.1:1 }} ]\npools:\n  p:\n    protocol: generate_json\n    max_concurrency: 2\n    health: {{ interval: 20ms }}\n    circuit_breaker: {{ failures: 0 }}\n    backends:\n      - addr: 127.0.0.1:9\n        restart: {restart}\n      - addr: 127.0.0.1:10\n"
    );
    serde_yaml::from_str(&yaml).expect("gateway conf")
}

async fn fail_requests(pool: &BackendPool, addr: SocketAddr, n: usize) {
    for _ in 0..n {
        let slot = pool.scheduler.ticket("t", vec![]).unwrap().slot().await.unwrap();
        if slot.addr() == addr {
            slot.failed();
        } else {
            slot.succeeded();
        }
    }
}

#[tokio::test]
async fn failed_requests_trigger_restarts_that_back_off_then_give_up() {
    let conf = gateway_conf("{ command: [\"false\"], after_failures: 2, cooldown: 200ms, max_per_hour: 2 }");
    let (pools, _health) = PoolSet::new(&conf).expect("pools");
    let sup = Supervisor::new(&conf.supervisor, &pools)
        .expect("supervisor")
        .expect("one watched");
    let pool = pools.pools().next().unwrap().clone();
    let dead: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let w = Arc::clone(&sup.watches[0]);
    let mut t = w.machine();
    assert_eq!(sup.states()[0].state, SupervisorState::Ok);
    assert!(!w.step(&mut t, None).await, "nothing wrong yet");

    // Two failed requests in a row: a restart; `false` fails it; the cooldown starts.
    fail_requests(&pool, dead, 4).await;
    assert!(pool.scheduler.consecutive_failures(dead) >= 2);
    assert!(w.step(&mut t, None).await, "restarted");
    assert_eq!(sup.states()[0].restarts, 1);
    assert_eq!(sup.states()[0].state, SupervisorState::Ok);
    assert_eq!(
        pool.scheduler.slot_override(dead),
        Some((None, false)),
        "let back in after a failed restart"
    );
    assert!(!w.step(&mut t, None).await, "within the cooldown: no restart");

    // After the cooldown: the second restart; the wait doubles.
    tokio::time::sleep(Duration::from_millis(220)).await;
    assert!(w.step(&mut t, None).await);
    assert_eq!(sup.states()[0].restarts, 2);
    tokio::time::sleep(Duration::from_millis(220)).await;
    assert!(
        !w.step(&mut t, None).await,
        "the second wait is 400 ms, not 200 ms"
    );

    // The third restart would pass max_per_hour: give up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!w.step(&mut t, None).await);
    let s = &sup.states()[0];
    assert_eq!((s.restarts, s.state), (2, SupervisorState::Failed));
    assert_eq!(s.addr, dead);
    assert_eq!(s.pool, "p");
}

#[tokio::test]
async fn a_disabled_instance_only_watches() {
    let mut conf = gateway_conf("{ command: [\"false\"], after_failures: 1 }");
    conf.supervisor.enabled = false;
    let (pools, _health) = PoolSet::new(&conf).expect("pools");
    let sup = Supervisor::new(&conf.supervisor, &pools).unwrap().unwrap();
    let pool = pools.pools().next().unwrap().clone();
    let dead: SocketAddr = "127.0.0.1:9".parse().unwrap();
    fail_requests(&pool, dead, 2).await;
    let w = Arc::clone(&sup.watches[0]);
    let mut t = w.machine();
    assert!(!w.step(&mut t, None).await);
    assert_eq!(sup.states()[0].restarts, 0);
}

#[tokio::test]
async fn a_successful_restart_drains_then_warms_up() {
    // The "backend" is a tiny HTTP server answering 200 to the health probe.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
            });
        }
    });
    let yaml = format!(
        "listen: [ {{ addr: 127.0.0.1:1 }} ]\npools:\n  p:\n    protocol: generate_json\n    max_concurrency: 4\n    health: {{ interval: 20ms }}\n    backends:\n      - addr: {addr}\n        restart: {{ command: [\"true\"], after_failures: 1, cooldown: 10ms, warmup: 50ms }}\n"
    );
    let conf: GatewayConf = serde_yaml::from_str(&yaml).unwrap();
    let (pools, _health) = PoolSet::new(&conf).unwrap();
    let sup = Supervisor::new(&conf.supervisor, &pools).unwrap().unwrap();
    let pool = pools.pools().next().unwrap().clone();
    fail_requests(&pool, addr, 1).await;
    let w = Arc::clone(&sup.watches[0]);
    let mut t = w.machine();
    assert!(w.step(&mut t, None).await);
    assert_eq!(sup.states()[0].state, SupervisorState::Warming);
    assert_eq!(pool.scheduler.slot_override(addr), Some((Some(1), false)));
    assert_eq!(pool.scheduler.consecutive_failures(addr), 0, "failures forgotten");
    tokio::time::sleep(Duration::from_millis(60)).await;
    w.step(&mut t, None).await;
    assert_eq!(pool.scheduler.slot_override(addr), Some((Some(2), false)));
    tokio::time::sleep(Duration::from_millis(60)).await;
    w.step(&mut t, None).await;
    assert_eq!(
        pool.scheduler.slot_override(addr),
        Some((None, false)),
        "all 4 slots"
    );
    assert_eq!(sup.states()[0].state, SupervisorState::Ok);
    assert_eq!(sup.states()[0].restarts, 1);
}
