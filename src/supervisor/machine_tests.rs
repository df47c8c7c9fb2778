//! The supervisor's rules alone: observations at chosen instants in, actions out. No clock is
//! read after the start (every instant is `t0` plus an offset), no command runs, so each case
//! is exact and takes no time.

use super::machine::{Action, AfterRestart, Machine, Observation, Settings, Trouble};
use super::SupervisorState;
use std::time::Duration;
use tokio::time::Instant;

const COOLDOWN: Duration = Duration::from_secs(10);
const WARMUP: Duration = Duration::from_secs(5);

fn settings() -> Settings {
    Settings {
        after_failures: 3,
        cooldown: COOLDOWN,
        max_per_hour: 3,
        warmup: WARMUP,
        max_concurrency: 8,
        enabled: true,
    }
}

/// No action.
fn none() -> Vec<Action> {
    Vec::new()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A look at `t0 + at`.
fn look(t0: Instant, at: Duration, healthy: bool, failed_requests: u32) -> Observation {
    Observation {
        now: t0 + at,
        healthy,
        failed_requests,
    }
}

/// Runs the restart the machine asked for, from `at` to `at + took`.
fn restart(m: &mut Machine, t0: Instant, at: Duration, took: Duration, healthy: bool) -> AfterRestart {
    m.restart_started(t0 + at);
    assert_eq!(m.state(), SupervisorState::Restarting);
    m.restart_finished(t0 + at + took, healthy)
}

#[test]
fn failed_health_checks_in_a_row_call_for_a_restart() {
    let t0 = Instant::now();
    let mut m = Machine::new(settings(), t0);
    assert_eq!(m.observe(look(t0, secs(1), true, 0)), none());
    assert_eq!(m.observe(look(t0, secs(2), false, 0)), none());
    assert_eq!(m.observe(look(t0, secs(3), false, 0)), none());
    assert_eq!(
        m.observe(look(t0, secs(4), true, 0)),
        none(),
        "a pass resets the count"
    );
    assert_eq!(m.observe(look(t0, secs(5), false, 0)), none());
    assert_eq!(m.observe(look(t0, secs(6), false, 0)), none());
    assert_eq!(
        m.observe(look(t0, secs(7), false, 0)),
        vec![Action::Restart {
            trouble: Trouble::HealthChecks(3),
            attempt: 1
        }]
    );
    assert_eq!(
        Trouble::HealthChecks(3).to_string(),
        "3 failed health checks in a row"
    );
    assert_eq!(
        m.state(),
        SupervisorState::Ok,
        "nothing happened until the restart starts"
    );
}

#[test]
fn failed_requests_in_a_row_call_for_a_restart_while_health_checks_pass() {
    let t0 = Instant::now();
    let mut m = Machine::new(settings(), t0);
    assert_eq!(m.observe(look(t0, secs(1), true, 2)), none());
    assert_eq!(
        m.observe(look(t0, secs(2), true, 5)),
        vec![Action::Restart {
            trouble: Trouble::FailedRequests(5),
            attempt: 1
        }]
    );
    assert_eq!(
        Trouble::FailedRequests(5).to_string(),
        "5 failed requests in a row"
    );
}

#[test]
fn restarts_that_do_not_help_back_off_doubling_then_the_hourly_cap_gives_up() {
    let t0 = Instant::now();
    let mut m = Machine::new(settings(), t0);
    let sick = |at| look(t0, at, true, 9);
    let restart_at = |m: &mut Machine, at| match m.observe(sick(at)).as_slice() {
        [Action::Restart { attempt, .. }] => *attempt,
        other => panic!("at {at:?}: expected a restart, got {other:?}"),
    };

    assert_eq!(restart_at(&mut m, secs(0)), 1);
    assert_eq!(
        restart(&mut m, t0, secs(0), secs(2), false),
        AfterRestart::Failed { backoff: COOLDOWN }
    );
    assert_eq!(m.state(), SupervisorState::Ok);
    assert_eq!(
        m.observe(sick(secs(11))),
        none(),
        "within the cooldown, counted from the end"
    );
    assert_eq!(restart_at(&mut m, secs(12)), 2);
    assert_eq!(
        restart(&mut m, t0, secs(12), secs(1), false),
        AfterRestart::Failed {
            backoff: 2 * COOLDOWN
        },
        "the second wait doubles"
    );
    assert_eq!(m.observe(sick(secs(32))), none());
    assert_eq!(restart_at(&mut m, secs(33)), 3);
    restart(&mut m, t0, secs(33), secs(1), false);

    // A fourth restart within the hour would pass max_per_hour (3).
    assert_eq!(
        m.observe(sick(secs(80))),
        vec![Action::GiveUp {
            trouble: Trouble::FailedRequests(9),
            restarts: 3
        }]
    );
    assert_eq!(m.state(), SupervisorState::Failed);
    assert_eq!(m.observe(sick(secs(4000))), none(), "given up: left alone");
    assert_eq!(
        m.observe(look(t0, secs(4001), false, 0)),
        none(),
        "still failing its checks"
    );
    assert_eq!(m.observe(look(t0, secs(4002), true, 0)), vec![Action::Recovered]);
    assert_eq!(m.state(), SupervisorState::Ok);

    // Watched again; the restarts of more than an hour ago no longer count.
    assert_eq!(restart_at(&mut m, secs(4003)), 1);
}

#[test]
fn the_backoff_stops_doubling_and_resets_once_the_backend_was_fine_for_a_cooldown() {
    let t0 = Instant::now();
    let mut m = Machine::new(
        Settings {
            max_per_hour: 100,
            max_concurrency: 1,
            ..settings()
        },
        t0,
    );
    let mut at = secs(0);
    let mut backoffs = Vec::new();
    for _ in 0..8 {
        assert!(matches!(
            m.observe(look(t0, at, true, 9)).as_slice(),
            [Action::Restart { .. }]
        ));
        match restart(&mut m, t0, at, Duration::ZERO, false) {
            AfterRestart::Failed { backoff } => backoffs.push(backoff.as_secs()),
            other => panic!("{other:?}"),
        }
        at += secs(backoffs[backoffs.len() - 1]);
    }
    assert_eq!(backoffs, [10, 20, 40, 80, 160, 320, 640, 640]);

    // It comes back by itself and stays fine for a cooldown: the next wait is one cooldown.
    assert_eq!(m.observe(look(t0, at, true, 0)), none());
    assert_eq!(m.observe(look(t0, at + COOLDOWN, true, 0)), none());
    at += COOLDOWN + secs(1);
    assert!(matches!(
        m.observe(look(t0, at, true, 9)).as_slice(),
        [Action::Restart { .. }]
    ));
    assert_eq!(
        restart(&mut m, t0, at, Duration::ZERO, false),
        AfterRestart::Failed { backoff: COOLDOWN }
    );
}

#[test]
fn a_successful_restart_starts_slow_and_doubles_every_warmup() {
    let t0 = Instant::now();
    let mut m = Machine::new(settings(), t0);
    assert!(matches!(
        m.observe(look(t0, secs(0), false, 3)).as_slice(),
        [Action::Restart { .. }]
    ));
    assert_eq!(
        restart(&mut m, t0, secs(0), secs(3), true),
        AfterRestart::SlowStart
    );
    assert_eq!(
        m.state(),
        SupervisorState::Warming,
        "one slot until the warm-up is over"
    );
    assert_eq!(m.observe(look(t0, secs(7), true, 0)), none());
    assert_eq!(
        m.observe(look(t0, secs(8), true, 0)),
        vec![Action::WarmUp { slots: 2 }]
    );
    assert_eq!(m.observe(look(t0, secs(12), true, 0)), none());
    assert_eq!(
        m.observe(look(t0, secs(13), true, 0)),
        vec![Action::WarmUp { slots: 4 }]
    );
    assert_eq!(m.state(), SupervisorState::Warming);
    assert_eq!(
        m.observe(look(t0, secs(18), true, 0)),
        vec![Action::WarmedUp],
        "8 = all"
    );
    assert_eq!(m.state(), SupervisorState::Ok);

    // A backend with one slot has nothing to warm up.
    let mut single = Machine::new(
        Settings {
            max_concurrency: 1,
            ..settings()
        },
        t0,
    );
    assert!(matches!(
        single.observe(look(t0, secs(0), true, 3)).as_slice(),
        [Action::Restart { .. }]
    ));
    assert_eq!(
        restart(&mut single, t0, secs(0), secs(1), true),
        AfterRestart::Serve
    );
    assert_eq!(single.state(), SupervisorState::Ok);
}

#[test]
fn trouble_while_warming_up_steps_the_warmup_then_restarts_after_the_cooldown() {
    let t0 = Instant::now();
    let mut m = Machine::new(settings(), t0);
    m.observe(look(t0, secs(0), true, 3));
    restart(&mut m, t0, secs(0), secs(1), true);
    // Failing again as its slot limit doubles, but within the cooldown: only the warm-up step.
    assert_eq!(
        m.observe(look(t0, secs(6), true, 3)),
        vec![Action::WarmUp { slots: 2 }]
    );
    // The cooldown over, the warm-up step comes first, then the restart (the second in the
    // hour), which ends the warm-up.
    assert_eq!(
        m.observe(look(t0, secs(11), true, 3)),
        vec![
            Action::WarmUp { slots: 4 },
            Action::Restart {
                trouble: Trouble::FailedRequests(3),
                attempt: 2
            }
        ]
    );
    m.restart_started(t0 + secs(11));
    assert_eq!(m.state(), SupervisorState::Restarting);
}

#[test]
fn a_lock_held_elsewhere_waits_a_cooldown_without_counting_a_restart() {
    let t0 = Instant::now();
    let mut m = Machine::new(settings(), t0);
    assert!(matches!(
        m.observe(look(t0, secs(0), false, 3)).as_slice(),
        [Action::Restart { attempt: 1, .. }]
    ));
    m.restart_elsewhere(t0);
    assert_eq!(m.state(), SupervisorState::Ok);
    assert_eq!(m.observe(look(t0, secs(9), false, 3)), none());
    assert!(
        matches!(
            m.observe(look(t0, secs(10), false, 3)).as_slice(),
            [Action::Restart { attempt: 1, .. }]
        ),
        "still the first restart of the hour"
    );
}

#[test]
fn a_disabled_instance_says_so_once_and_never_restarts() {
    let t0 = Instant::now();
    let mut m = Machine::new(
        Settings {
            enabled: false,
            ..settings()
        },
        t0,
    );
    assert_eq!(
        m.observe(look(t0, secs(1), true, 3)),
        vec![Action::RestartsOff {
            trouble: Trouble::FailedRequests(3)
        }]
    );
    for s in 2..100 {
        assert_eq!(m.observe(look(t0, secs(s * 60), false, 3)), none());
    }
    assert_eq!(m.state(), SupervisorState::Ok);
}
