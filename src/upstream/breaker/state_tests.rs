use super::*;

const MS: Duration = Duration::from_millis(1);

fn config() -> BreakerConfig {
    BreakerConfig {
        window: Duration::from_secs(10),
        min_calls: 5,
        failure_rate: 0.5,
        slow_call: 600 * MS,
        slow_rate: 0.8,
        open_wait: Duration::from_secs(5),
        half_open_probes: 2,
    }
}

fn fail(b: &mut Breaker, now: Instant) -> Option<Transition> {
    b.record(None, true, 10 * MS, now)
}

fn succeed(b: &mut Breaker, now: Instant) -> Option<Transition> {
    b.record(None, false, 10 * MS, now)
}

fn opened(now: Instant) -> Breaker {
    let mut b = Breaker::new(config(), now);
    for _ in 0..5 {
        fail(&mut b, now);
    }
    assert_eq!(b.state(), StateName::Open);
    b
}

#[test]
fn stays_closed_below_the_minimum_number_of_calls() {
    let now = Instant::now();
    let mut b = Breaker::new(config(), now);
    for _ in 0..4 {
        assert_eq!(fail(&mut b, now), None);
    }
    assert_eq!(b.state(), StateName::Closed);
    assert_eq!(fail(&mut b, now), Some(Transition { from: StateName::Closed, to: StateName::Open }));
}

#[test]
fn opens_at_the_failure_rate_threshold_and_not_below() {
    let now = Instant::now();
    let mut b = Breaker::new(config(), now);
    // 2 failures out of 5 = 40 %: closed.
    for failure in [true, false, true, false, false] {
        b.record(None, failure, MS, now);
    }
    assert_eq!(b.state(), StateName::Closed);
    // 3 of 6 = 50 %: open.
    fail(&mut b, now);
    assert_eq!(b.state(), StateName::Open);
}

#[test]
fn a_long_healthy_past_does_not_blind_the_breaker() {
    // Regression for the count-window bug of tower-resilience 0.13 (DEPENDENCIES.md).
    let start = Instant::now();
    let mut b = Breaker::new(config(), start);
    for i in 0..10_000u32 {
        succeed(&mut b, start + Duration::from_millis(u64::from(i)));
    }
    let later = start + Duration::from_secs(30);
    for _ in 0..5 {
        fail(&mut b, later);
    }
    assert_eq!(b.state(), StateName::Open, "old successes slid out of the window");
}

#[test]
fn recent_successes_still_count_within_the_window() {
    let start = Instant::now();
    let mut b = Breaker::new(config(), start);
    for _ in 0..20 {
        succeed(&mut b, start);
    }
    for _ in 0..5 {
        fail(&mut b, start + Duration::from_secs(3));
    }
    assert_eq!(b.state(), StateName::Closed, "5 failures against 20 recent successes is 20 %");
}

#[test]
fn slow_calls_open_it_even_when_they_succeed() {
    let now = Instant::now();
    let mut b = Breaker::new(config(), now);
    for _ in 0..5 {
        b.record(None, false, 700 * MS, now);
    }
    assert_eq!(b.state(), StateName::Open);
}

#[test]
fn open_rejects_with_the_remaining_wait() {
    let now = Instant::now();
    let mut b = opened(now);
    let (admission, _) = b.admit(now + Duration::from_millis(1500));
    assert_eq!(admission, Admission::Rejected { retry_after: Duration::from_millis(3500) });
}

#[test]
fn refuses_tells_the_remaining_wait_and_changes_nothing() {
    let now = Instant::now();
    let b = opened(now);
    assert_eq!(b.refuses(now + Duration::from_millis(1500)), Some(Duration::from_millis(3500)));
    assert_eq!(b.refuses(now + Duration::from_secs(5)), None, "the wait is over: a probe may be tried");
    assert_eq!(b.state(), StateName::Open, "asking is not admitting: no transition to half-open");
    assert_eq!(Breaker::new(config(), now).refuses(now), None, "closed refuses nothing");
}

#[test]
fn after_the_wait_a_bounded_number_of_probes_go_through() {
    let now = Instant::now();
    let mut b = opened(now);
    let later = now + Duration::from_secs(5);
    let (first, transition) = b.admit(later);
    assert_eq!(transition, Some(Transition { from: StateName::Open, to: StateName::HalfOpen }));
    assert!(matches!(first, Admission::Admitted { probe: Some(_) }));
    assert!(matches!(b.admit(later).0, Admission::Admitted { probe: Some(_) }));
    assert_eq!(b.admit(later).0, Admission::Rejected { retry_after: HALF_OPEN_RETRY_AFTER }, "third concurrent probe");
}

#[test]
fn one_good_probe_closes_one_bad_probe_reopens() {
    let now = Instant::now();
    let later = now + Duration::from_secs(5);

    let mut b = opened(now);
    let Admission::Admitted { probe } = b.admit(later).0 else { panic!("probe") };
    let closed = b.record(probe, false, 10 * MS, later);
    assert_eq!(closed, Some(Transition { from: StateName::HalfOpen, to: StateName::Closed }));
    assert!(b.is_idle(later), "closing forgets the old window");

    let mut b = opened(now);
    let Admission::Admitted { probe } = b.admit(later).0 else { panic!("probe") };
    assert_eq!(
        b.record(probe, true, 10 * MS, later),
        Some(Transition { from: StateName::HalfOpen, to: StateName::Open })
    );
    assert_eq!(b.admit(later + MS).0, Admission::Rejected { retry_after: Duration::from_secs(5) - MS });
}

#[test]
fn a_slow_probe_counts_as_bad() {
    let now = Instant::now();
    let later = now + Duration::from_secs(5);
    let mut b = opened(now);
    let Admission::Admitted { probe } = b.admit(later).0 else { panic!("probe") };
    b.record(probe, false, 700 * MS, later);
    assert_eq!(b.state(), StateName::Open);
}

#[test]
fn a_cancelled_probe_frees_its_slot_without_a_verdict() {
    let now = Instant::now();
    let later = now + Duration::from_secs(5);
    let mut b = opened(now);
    let Admission::Admitted { probe: a } = b.admit(later).0 else { panic!("probe") };
    let Admission::Admitted { .. } = b.admit(later).0 else { panic!("probe") };
    b.release(a);
    assert_eq!(b.state(), StateName::HalfOpen);
    assert!(matches!(b.admit(later).0, Admission::Admitted { probe: Some(_) }), "the slot came back");
}

#[test]
fn a_late_answer_from_an_earlier_cycle_changes_nothing() {
    let now = Instant::now();
    let mut b = opened(now);
    let t1 = now + Duration::from_secs(5);
    let Admission::Admitted { probe: old } = b.admit(t1).0 else { panic!("probe") };
    let Admission::Admitted { probe: bad } = b.admit(t1).0 else { panic!("probe") };
    b.record(bad, true, MS, t1); // reopens
    let t2 = t1 + Duration::from_secs(5);
    let Admission::Admitted { probe: current } = b.admit(t2).0 else { panic!("probe") };
    assert_eq!(b.record(old, false, MS, t2), None, "old cycle's success must not close");
    b.release(old);
    assert_eq!(b.state(), StateName::HalfOpen);
    assert!(matches!(b.admit(t2).0, Admission::Admitted { probe: Some(_) }), "old release freed no current slot");
    assert_eq!(b.admit(t2).0, Admission::Rejected { retry_after: HALF_OPEN_RETRY_AFTER });
    assert!(b.record(current, false, MS, t2).is_some());
}

#[test]
fn answers_of_calls_admitted_before_opening_are_ignored_while_open() {
    let now = Instant::now();
    let mut b = opened(now);
    assert_eq!(succeed(&mut b, now), None);
    assert_eq!(b.state(), StateName::Open);
}

#[test]
fn tick_turns_a_due_open_breaker_half_open_once_without_a_call() {
    let now = Instant::now();
    let mut b = opened(now);
    assert_eq!(b.tick(now + Duration::from_millis(4999)), None, "still waiting");
    assert_eq!(b.state(), StateName::Open);
    let due = now + Duration::from_secs(5);
    assert_eq!(b.tick(due), Some(Transition { from: StateName::Open, to: StateName::HalfOpen }));
    assert_eq!(b.state(), StateName::HalfOpen);
    assert_eq!(b.tick(due + Duration::from_secs(60)), None, "half-open until a probe answers");
    // The probes of that half-open period are admitted as if `admit` had made the transition.
    assert_eq!(b.admit(due).0, Admission::Admitted { probe: Some(1) });
    assert_eq!(b.admit(due).0, Admission::Admitted { probe: Some(1) });
    assert!(matches!(b.admit(due).0, Admission::Rejected { .. }), "two probe slots");
}

#[test]
fn tick_leaves_a_closed_breaker_alone() {
    let now = Instant::now();
    let mut b = Breaker::new(config(), now);
    fail(&mut b, now);
    assert_eq!(b.tick(now + Duration::from_secs(3600)), None);
    assert_eq!(b.state(), StateName::Closed);
}

#[test]
fn the_state_labels_are_the_states_names() {
    assert_eq!(StateName::ALL.map(StateName::as_str), StateName::LABELS);
}

#[test]
fn forced_open_refuses_every_call_records_nothing_and_never_half_opens() {
    let now = Instant::now();
    let mut b = Breaker::new(config(), now);
    assert_eq!(b.set_mode(Mode::ForcedOpen), Some(Transition { from: StateName::Closed, to: StateName::Open }));
    assert_eq!((b.state(), b.mode()), (StateName::Open, Mode::ForcedOpen));
    let much_later = now + Duration::from_secs(3600);
    assert_eq!(b.tick(much_later), None, "no open wait ends a forced breaker");
    assert_eq!(b.admit(much_later), (Admission::Rejected { retry_after: Duration::from_secs(5) }, None));
    assert_eq!(b.refuses(much_later), Some(Duration::from_secs(5)));
    assert_eq!(succeed(&mut b, much_later), None);
    assert_eq!(b.state(), StateName::Open);
    assert!(!b.is_idle(much_later), "a forced breaker is never forgotten");
}

#[test]
fn forced_closed_admits_every_call_whatever_the_failures() {
    let now = Instant::now();
    let mut b = opened(now);
    assert_eq!(b.set_mode(Mode::ForcedClosed), Some(Transition { from: StateName::Open, to: StateName::Closed }));
    assert_eq!(b.refuses(now), None);
    for _ in 0..100 {
        assert_eq!(b.admit(now), (Admission::Admitted { probe: None }, None));
        assert_eq!(fail(&mut b, now), None, "failures are not counted");
    }
    assert_eq!((b.state(), b.mode()), (StateName::Closed, Mode::ForcedClosed));
}

#[test]
fn back_to_auto_the_breaker_starts_afresh_and_judges_again() {
    let now = Instant::now();
    let mut b = opened(now);
    b.set_mode(Mode::ForcedOpen);
    assert_eq!(b.set_mode(Mode::Auto), Some(Transition { from: StateName::Open, to: StateName::Closed }));
    assert_eq!(b.set_mode(Mode::Auto), None, "no change, no transition");
    for _ in 0..4 {
        assert_eq!(fail(&mut b, now), None, "the window was emptied: below the minimum again");
    }
    assert_eq!(fail(&mut b, now), Some(Transition { from: StateName::Closed, to: StateName::Open }));
}

#[test]
fn a_probe_admitted_before_a_mode_change_says_nothing_after_it() {
    let now = Instant::now();
    let mut b = opened(now);
    let due = now + Duration::from_secs(5);
    let Admission::Admitted { probe } = b.admit(due).0 else { panic!("half-open admits a probe") };
    b.set_mode(Mode::ForcedClosed);
    b.set_mode(Mode::Auto);
    assert_eq!(b.record(probe, true, MS, due), None, "the old probe's failure does not reopen it");
    assert_eq!(b.state(), StateName::Closed);
}

#[test]
fn every_forced_change_is_a_registered_transition() {
    let now = Instant::now();
    for start in [Mode::Auto, Mode::ForcedOpen, Mode::ForcedClosed] {
        for end in Mode::ALL {
            for mut b in [Breaker::new(config(), now), opened(now)] {
                b.set_mode(start);
                if let Some(t) = b.set_mode(end) {
                    assert!(Transition::ALL.contains(&t), "{start:?} → {end:?}: {t:?}");
                }
            }
        }
    }
}

#[test]
fn new_thresholds_apply_to_the_next_calls_and_a_new_window_forgets_the_old_one() {
    let now = Instant::now();
    let mut b = Breaker::new(config(), now);
    for _ in 0..4 {
        fail(&mut b, now);
    }
    b.reconfigure(BreakerConfig { min_calls: 4, ..config() }, now);
    assert_eq!(b.state(), StateName::Closed, "kept its state");
    assert!(fail(&mut b, now).is_some(), "5 failures against the new minimum of 4");
    let mut b = Breaker::new(config(), now);
    for _ in 0..4 {
        fail(&mut b, now);
    }
    b.reconfigure(BreakerConfig { window: Duration::from_secs(20), ..config() }, now);
    assert_eq!(fail(&mut b, now), None, "the old window's four failures are forgotten");
}
