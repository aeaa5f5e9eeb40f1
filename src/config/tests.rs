//! The whole configuration: defaults, overrides, and one named error per bad value.

use std::collections::HashMap;

use super::*;

fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Config::from_lookup(|name| vars.get(name).cloned())
}

#[test]
fn defaults_match_the_design() {
    let c = load(&[]).expect("defaults are valid");
    assert_eq!(c.http.addr.to_string(), "127.0.0.1:8000");
    assert_eq!((c.database.url.as_str(), c.database.backend), ("sqlite://orders.db", Backend::Sqlite));
    assert_eq!(c.broker.amqp_url, None);
    assert_eq!(c.upstreams.user.url.as_str(), "http://127.0.0.1:8082/");
    assert_eq!(c.upstreams.product.url.as_str(), "http://127.0.0.1:8081/");
    assert_eq!(c.orders.deadline, Duration::from_millis(2000));
    assert_eq!(c.http.metrics_addr, None);
    assert_eq!(c.http.max_in_flight, 128, "twice an upstream's bulkhead");
    assert_eq!(c.http.max_reads_in_flight, 128);
    assert_eq!(c.http.write_limit, LimitConfig { algorithm: LimitAlgorithm::Gradient2, min: 64, max: 128 });
    assert_eq!(c.http.shed_delay, Duration::from_millis(250));
    let small =
        load(&[("HTTP_MAX_IN_FLIGHT", "4"), ("HTTP_CONCURRENCY_ALGORITHM", "fixed"), ("HTTP_SHED_DELAY_MS", "0")]);
    let small = small.expect("valid");
    assert_eq!(
        small.http.write_limit,
        LimitConfig { algorithm: LimitAlgorithm::Fixed, min: 4, max: 4 },
        "floor ≤ ceiling"
    );
    assert_eq!(small.http.shed_delay, Duration::ZERO);
    assert!(load(&[("HTTP_CONCURRENCY_ALGORITHM", "fast")]).is_err());
    assert_eq!(c.http.first_byte_timeout, Duration::from_secs(10));
    assert_eq!(c.http.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.http.max_connections, 10_000, "below a typical file limit (20,000 on these machines)");
    assert_eq!(c.broker.pending_interval, Duration::from_secs(5));
    assert_eq!(
        c.orders.idempotency,
        IdempotencyConfig {
            lease: Duration::from_secs(30),
            retention: Duration::from_secs(86_400),
            longest_order: Duration::from_secs(3),
        }
    );
    for stack in [&c.upstreams.user.stack, &c.upstreams.product.stack] {
        assert_eq!(stack.attempt_timeout, Duration::from_millis(800));
        assert_eq!(stack.max_attempts, 3);
        assert_eq!(stack.backoff.base, Duration::from_millis(50));
        assert_eq!(stack.retry_budget_percent, 20);
        assert_eq!(stack.breaker.upstream.window, Duration::from_secs(10));
        assert_eq!((stack.not_found_ttl, stack.not_found_max_keys), (Duration::from_secs(5), 1024));
    }
    let off = load(&[("PRODUCT_NOT_FOUND_TTL_MS", "0")]).expect("0 turns it off");
    assert_eq!(off.upstreams.product.stack.not_found_ttl, Duration::ZERO);
}

#[test]
fn each_upstream_is_configured_on_its_own() {
    let c = load(&[("PRODUCT_ATTEMPT_TIMEOUT_MS", "150"), ("USER_BREAKER_KEY_MIN_CALLS", "2")]).expect("valid");
    assert_eq!(c.upstreams.product.stack.attempt_timeout, Duration::from_millis(150));
    assert_eq!(c.upstreams.user.stack.attempt_timeout, Duration::from_millis(800));
    assert_eq!(c.upstreams.user.stack.breaker.per_key.min_calls, 2);
    assert_eq!(c.upstreams.product.stack.breaker.per_key.min_calls, 5);
}

#[test]
fn overrides_are_read() {
    let c = load(&[
        ("HTTP_ADDR", "0.0.0.0:9000"),
        ("DATABASE_URL", "postgres://u@h/db"),
        ("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        ("ORDER_DEADLINE_MS", "350"),
        ("METRICS_ADDR", "127.0.0.1:9100"),
        ("IDEMPOTENCY_LEASE_MS", "1500"),
    ])
    .expect("valid");
    assert_eq!(c.http.metrics_addr.map(|a| a.port()), Some(9100));
    assert_eq!(c.orders.idempotency.lease, Duration::from_millis(1500));
    assert_eq!(c.http.addr.port(), 9000);
    assert_eq!(c.database.backend, Backend::Postgres);
    assert!(c.broker.amqp_url.is_some());
    assert_eq!(c.orders.deadline, Duration::from_millis(350));
}

#[test]
fn each_bad_value_names_its_variable() {
    let cases = [
        ("HTTP_ADDR", "localhost"),
        ("DATABASE_URL", "mysql://root:secret@h/db"),
        ("AMQP_URL", "http://x"),
        ("USER_SERVICE_URL", "not a url"),
        ("PRODUCT_SERVICE_URL", "ftp://x"),
        ("ORDER_DEADLINE_MS", "2s"),
        ("ORDER_DEADLINE_MS", "0"),
        ("DATABASE_MAX_CONNECTIONS", "-1"),
        ("USER_ATTEMPT_TIMEOUT_MS", "fast"),
        ("PRODUCT_BREAKER_FAILURE_RATE_PERCENT", "150"),
        ("PRODUCT_MAX_ATTEMPTS", "0"),
        ("METRICS_ADDR", "9100"),
        ("HTTP_HEADER_READ_TIMEOUT_MS", "0"),
        ("HTTP_FIRST_BYTE_TIMEOUT_MS", "0"),
        ("HTTP_IDLE_TIMEOUT_MS", "soon"),
        ("HTTP_MAX_CONNECTIONS", "0"),
        ("HTTP_MAX_READS_IN_FLIGHT", "0"),
        ("IDEMPOTENCY_LEASE_MS", "500"),
        ("IDEMPOTENCY_RETENTION_HOURS", "0"),
        ("DATABASE_STATEMENT_CACHE_CAPACITY", "-1"),
        ("DATABASE_SESSION_URL", "mysql://root:secret@h/db"),
        ("DATABASE_SESSION_URL", "postgres://u@h/db"),
    ];
    for (var, value) in cases {
        let err = load(&[(var, value)]).expect_err(var);
        assert_eq!(err.var, var, "{value}");
        assert!(err.to_string().starts_with(&format!("invalid {var}: ")));
    }
}

#[test]
fn relay_settings_have_defaults_and_are_validated() {
    let c = load(&[]).expect("defaults");
    assert_eq!(c.broker.relay, RelaySettings::default());
    assert_eq!(c.broker.relay.poll_interval, Duration::from_secs(1));
    assert_eq!(c.broker.relay.batch_size, 100);
    assert_eq!(c.broker.relay.pass_spacing, Duration::from_millis(10));
    let vars = [("OUTBOX_POLL_INTERVAL_MS", "50"), ("OUTBOX_BATCH_SIZE", "7"), ("OUTBOX_PASS_SPACING_MS", "3")];
    let c = load(&vars).expect("valid");
    assert_eq!(c.broker.relay.poll_interval, Duration::from_millis(50));
    assert_eq!(c.broker.relay.batch_size, 7);
    assert_eq!(c.broker.relay.pass_spacing, Duration::from_millis(3));
    let invalid = [
        ("OUTBOX_BATCH_SIZE", "0"),
        ("OUTBOX_POLL_INTERVAL_MS", "soon"),
        ("OUTBOX_RETRY_MAX_MS", "10"),
        ("OUTBOX_PASS_SPACING_MS", "0"),
    ];
    for (var, value) in invalid {
        assert_eq!(load(&[(var, value)]).expect_err(var).var, var, "{value}");
    }
}

#[test]
fn effective_config_lists_every_variable_with_its_default_and_hides_passwords() {
    let vars = Config::effective(|name| match name {
        "DATABASE_URL" => Some("postgres://app:s3cret@db:5432/orders".to_owned()),
        "USER_ATTEMPT_TIMEOUT_MS" => Some("150".to_owned()),
        _ => None,
    })
    .expect("valid");
    let get = |name: &str| vars.get(name).cloned().flatten();
    assert_eq!(get("DATABASE_URL").as_deref(), Some("postgres://app:***@db:5432/orders"));
    assert_eq!(get("USER_ATTEMPT_TIMEOUT_MS").as_deref(), Some("150"));
    assert_eq!(get("PRODUCT_ATTEMPT_TIMEOUT_MS").as_deref(), Some("800"));
    assert_eq!(get("ORDER_DEADLINE_MS").as_deref(), Some("2000"));
    assert_eq!(get("HTTP_ADDR").as_deref(), Some("127.0.0.1:8000"));
    assert!(vars.contains_key("AMQP_URL") && get("AMQP_URL").is_none(), "unset optional variables are listed");
    assert!(!format!("{vars:?}").contains("s3cret"));
}

#[test]
fn a_bad_service_url_does_not_echo_its_password() {
    for var in ["USER_SERVICE_URL", "PRODUCT_SERVICE_URL"] {
        for value in [
            "ftp://u:secret@h/",
            "http://u:secret@h:99999/",
            "http://u:secret@[::1/",
            "u:secret@h",
            "mailto:u:secret@h",
            " http://:secret@h:x/p?q#f ",
        ] {
            let err = load(&[(var, value)]).expect_err(value);
            assert_eq!(err.var, var);
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }
    let err = load(&[("USER_SERVICE_URL", "ftp://u:secret@h/x")]).expect_err("ftp");
    assert!(err.to_string().ends_with(r#"got "ftp://u:***@h/x""#), "the rest is still shown: {err}");
}

#[test]
fn a_bad_database_url_does_not_echo_its_password() {
    let err = load(&[("DATABASE_URL", "mysql://root:secret@h/db")]).expect_err("mysql");
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[test]
fn the_session_url_defaults_to_the_database_url_and_a_pooler_can_turn_the_cache_off() {
    let c = load(&[("DATABASE_URL", "postgres://u@bouncer:6432/db")]).expect("valid");
    assert_eq!(c.database.session_url, "postgres://u@bouncer:6432/db");
    assert_eq!(c.database.statement_cache_capacity, 100, "sqlx's default");
    let c = load(&[
        ("DATABASE_URL", "postgres://u@bouncer:6432/db"),
        ("DATABASE_SESSION_URL", "postgres://u@db:5432/db"),
        ("DATABASE_STATEMENT_CACHE_CAPACITY", "0"),
    ])
    .expect("valid");
    assert_eq!((c.database.session_url.as_str(), c.database.statement_cache_capacity), ("postgres://u@db:5432/db", 0));
}

#[test]
fn a_reload_reads_every_variable_the_start_read_even_those_not_shown() {
    let config =
        load(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"), ("PRODUCT_MAX_ATTEMPTS", "2")]).expect("valid");
    let base = &config.source.base;
    assert_eq!(base.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").map(String::as_str), Some("http/protobuf"));
    assert_eq!(base.get("PRODUCT_MAX_ATTEMPTS").map(String::as_str), Some("2"));
    assert_eq!(config.reread().expect("valid again"), config, "nothing changed, nothing differs");
}
