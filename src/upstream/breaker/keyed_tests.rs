use super::*;

const MS: Duration = Duration::from_millis(1);

fn breaker(min_calls: u32, failure_rate: f64) -> BreakerConfig {
    BreakerConfig {
        window: Duration::from_secs(10),
        min_calls,
        failure_rate,
        slow_call: 600 * MS,
        slow_rate: 0.8,
        open_wait: Duration::from_secs(5),
        half_open_probes: 1,
    }
}

fn breakers(max_keys: usize) -> KeyedBreakers {
    let config = KeyedConfig { upstream: breaker(10, 0.8), per_key: breaker(5, 0.9), max_keys, min_failing_keys: 3 };
    KeyedBreakers::new(config, Instant::now())
}

fn call(b: &mut KeyedBreakers, key: &str, failure: bool, now: Instant) -> Result<(), Refused> {
    let verdict = if failure { Verdict::Failed } else { Verdict::Healthy };
    attempt(b, key, verdict, now)
}

fn attempt(b: &mut KeyedBreakers, key: &str, verdict: Verdict, now: Instant) -> Result<(), Refused> {
    let ticket = b.admit(key, now).0?;
    b.record(key, ticket, verdict, 10 * MS, now);
    Ok(())
}

#[test]
fn a_failing_key_opens_alone_and_the_others_keep_flowing() {
    let mut b = breakers(100);
    let now = Instant::now();
    for round in 0..30 {
        let _ = call(&mut b, "veggie-box", true, now);
        assert_eq!(call(&mut b, "classic-box", false, now), Ok(()), "round {round}");
    }
    let refused = call(&mut b, "veggie-box", true, now).expect_err("veggie is open");
    assert!(refused.by_key);
    assert_eq!(b.upstream_state(), StateName::Closed);
    assert_eq!(b.keys_open(), 1);
}

#[test]
fn failure_across_every_key_opens_the_upstream_breaker() {
    let mut b = breakers(100);
    let now = Instant::now();
    // The first two failing keys look confined; from the third on, failures count.
    for i in 0..11u32 {
        let _ = call(&mut b, &format!("key-{i}"), true, now);
        assert_eq!(b.upstream_state(), StateName::Closed, "only {} counted", i.saturating_sub(1));
    }
    let _ = call(&mut b, "key-11", true, now);
    assert_eq!(b.upstream_state(), StateName::Open);
    let refused = call(&mut b, "never-seen", false, now).expect_err("whole upstream open");
    assert!(!refused.by_key);
    assert_eq!(refused.retry_after, Duration::from_secs(5));
}

#[test]
fn two_bad_keys_failing_without_end_never_open_the_upstream() {
    let mut b = breakers(100);
    let now = Instant::now();
    for i in 0..200 {
        let t = now + Duration::from_millis(i * 50);
        let _ = call(&mut b, "veggie-box", true, t);
        let _ = call(&mut b, "family-box", true, t);
    }
    assert_eq!(b.upstream_state(), StateName::Closed);
    assert_eq!(b.keys_open(), 2);
}

#[test]
fn refused_connections_open_the_upstream_whatever_the_keys() {
    let mut b = breakers(100);
    let now = Instant::now();
    for _ in 0..10 {
        attempt(&mut b, "classic-box", Verdict::Unreachable, now).expect("admitted until the upstream opens");
    }
    assert_eq!(b.upstream_state(), StateName::Open);
    assert_eq!(b.keys_open(), 0, "the key itself did nothing wrong");
}

#[test]
fn an_alternating_key_at_fifty_percent_stays_closed() {
    let mut b = breakers(100);
    let now = Instant::now();
    for i in 0..100 {
        assert_eq!(call(&mut b, "e6f24d7d1c7e", i % 2 == 0, now), Ok(()), "call {i}");
    }
}

#[test]
fn healthy_and_unknown_keys_take_no_room() {
    let mut b = breakers(100);
    let now = Instant::now();
    for i in 0..1000 {
        call(&mut b, &format!("user-{i}"), false, now).expect("closed");
    }
    assert!(b.keys.is_empty());
}

#[test]
fn the_map_stays_bounded_and_keeps_open_breakers_longest() {
    let mut b = breakers(3);
    let now = Instant::now();
    for _ in 0..5 {
        let _ = call(&mut b, "bad", true, now);
    }
    for i in 0..50 {
        let _ = call(&mut b, &format!("flaky-{i}"), true, now);
        assert!(b.keys.len() <= 3);
    }
    assert!(call(&mut b, "bad", true, now).is_err(), "the open breaker survived eviction");
}

#[test]
fn tick_half_opens_every_due_breaker_and_names_the_keys() {
    let mut b = breakers(100);
    let now = Instant::now();
    for _ in 0..5 {
        let _ = call(&mut b, "bad", true, now);
    }
    for _ in 0..10 {
        attempt(&mut b, "any", Verdict::Unreachable, now).expect("admitted until the upstream opens");
    }
    assert_eq!((b.upstream_state(), b.keys_open()), (StateName::Open, 1));
    let half_open = Transition { from: StateName::Open, to: StateName::HalfOpen };
    assert_eq!(b.tick(now + Duration::from_secs(1)), (None, vec![]), "not due yet");
    let (upstream, keys) = b.tick(now + Duration::from_secs(5));
    assert_eq!((upstream, keys), (Some(half_open), vec![("bad".to_owned(), half_open)]));
    assert_eq!((b.upstream_state(), b.keys_open()), (StateName::HalfOpen, 1), "half-open keys still count");
    assert_eq!(b.tick(now + Duration::from_secs(6)), (None, vec![]), "each transition once");
}

#[test]
fn a_key_refusal_gives_back_the_upstream_probe_slot() {
    let now = Instant::now();
    let per_key = BreakerConfig { open_wait: Duration::from_secs(10), ..breaker(5, 0.9) };
    let config = KeyedConfig { upstream: breaker(10, 0.8), per_key, max_keys: 100, min_failing_keys: 3 };
    let mut b = KeyedBreakers::new(config, now);
    for i in 0..5 {
        let _ = call(&mut b, &format!("k{i}"), true, now);
        let _ = call(&mut b, "bad", true, now);
    }
    for i in 5..7 {
        let _ = call(&mut b, &format!("k{i}"), true, now);
    }
    assert_eq!(b.upstream_state(), StateName::Open, "10 of 12 failures counted");
    assert!(b.keys.get("bad").is_some_and(|k| k.state() == StateName::Open));
    // The upstream half-opens (one probe slot) while "bad" still has 5 s to wait.
    let later = now + Duration::from_secs(5);
    let refused = b.admit("bad", later).0.expect_err("bad is still open");
    assert_eq!(refused, Refused { retry_after: Duration::from_secs(5), by_key: true });
    assert_eq!(b.upstream_state(), StateName::HalfOpen);
    assert!(b.admit("good", later).0.is_ok(), "the upstream probe slot was given back");
}

#[test]
fn forced_closed_bypasses_the_open_key_breakers_and_judges_nothing() {
    let mut b = breakers(100);
    let now = Instant::now();
    for _ in 0..5 {
        let _ = call(&mut b, "bad", true, now);
    }
    assert!(call(&mut b, "bad", true, now).is_err(), "its key breaker is open");
    b.set_mode(Mode::ForcedClosed);
    assert_eq!(b.refuses("bad", now), None);
    for _ in 0..50 {
        assert_eq!(attempt(&mut b, "bad", Verdict::Unreachable, now), Ok(()), "every call reaches the upstream");
    }
    assert_eq!((b.upstream_state(), b.keys_open(), b.open_keys()), (StateName::Closed, 0, vec![]));
}

#[test]
fn forced_open_refuses_every_key_and_auto_starts_afresh() {
    let mut b = breakers(100);
    let now = Instant::now();
    for _ in 0..5 {
        let _ = call(&mut b, "bad", true, now);
    }
    assert_eq!(b.open_keys(), vec!["bad".to_owned()]);
    let opened = b.set_mode(Mode::ForcedOpen);
    assert_eq!(opened, Some(Transition { from: StateName::Closed, to: StateName::Open }));
    let refused = call(&mut b, "never-seen", false, now).expect_err("forced open");
    assert!(!refused.by_key);
    assert!(b.refuses("classic-box", now).is_some());
    b.set_mode(Mode::Auto);
    assert_eq!(call(&mut b, "bad", true, now), Ok(()), "the key's old verdict is forgotten too");
    assert_eq!((b.mode(), b.upstream_state()), (Mode::Auto, StateName::Closed));
}

#[test]
fn reconfigured_key_breakers_use_the_new_thresholds() {
    let mut b = breakers(100);
    let now = Instant::now();
    let _ = call(&mut b, "bad", true, now);
    let mut config = b.config.clone();
    config.per_key.min_calls = 2;
    b.reconfigure(config, now);
    let _ = call(&mut b, "bad", true, now);
    assert_eq!(b.open_keys(), vec!["bad".to_owned()], "opened at the new minimum of 2 calls");
}
