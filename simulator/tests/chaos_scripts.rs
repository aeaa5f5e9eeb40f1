//! The `chaos/` scripts drive a running simulator's admin API as documented.

use std::path::PathBuf;
use std::process::{Command, Output};

use upstream_sim::{Fault, SimConfig};

fn chaos(script: &str, args: &[&str], admin: &str) -> Output {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../chaos").join(script);
    Command::new("bash")
        .arg(path)
        .args(args)
        .env("USER_SIM_URL", admin)
        .env("PRODUCT_SIM_URL", admin)
        .output()
        .expect("bash runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn each_script_injects_lists_and_restores() {
    let sim = upstream_sim::spawn(SimConfig::ephemeral()).await.expect("simulator");
    let admin = sim.admin_url();

    let out = chaos_blocking("delay", &["product", "1500ms", "--for", "30s"], &admin).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("undo:"), "every script says how to undo: {}", text(&out));
    for (script, args) in [
        ("delay", &["product", "1s", "--probability", "0.05"][..]),
        ("errors", &["user", "50", "503"][..]),
        ("outage", &["product", "--for", "5s"][..]),
        ("hang", &["user", "--key", "nobody"][..]),
    ] {
        let out = chaos_blocking(script, args, &admin).await;
        assert!(out.status.success(), "{script}: {}", text(&out));
    }
    let faults: Vec<Fault> = sim.sim.faults.list(tokio::time::Instant::now()).into_iter().map(|f| f.fault).collect();
    assert_eq!(
        faults,
        vec![
            Fault::Delay { ms: 1500, jitter_ms: 0, percent: 100 },
            Fault::Delay { ms: 1000, jitter_ms: 0, percent: 5 },
            Fault::Errors { percent: 50, status: 503 },
            Fault::Outage,
            Fault::Hang { percent: 100 },
        ]
    );
    let status = chaos_blocking("status", &[], &admin).await;
    assert!(text(&status).contains("\"outage\""), "{}", text(&status));

    let reset = chaos_blocking("reset", &[], &admin).await;
    assert!(reset.status.success(), "{}", text(&reset));
    assert!(sim.sim.faults.list(tokio::time::Instant::now()).is_empty());
}

async fn chaos_blocking(script: &'static str, args: &[&str], admin: &str) -> Output {
    let (args, admin): (Vec<String>, String) = (args.iter().map(|a| (*a).to_owned()).collect(), admin.to_owned());
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        chaos(script, &args, &admin)
    })
    .await
    .expect("task")
}

#[test]
fn bad_arguments_and_remote_targets_are_refused_with_exit_2() {
    for (script, args) in [
        ("errors", &["user", "150"][..]),
        ("delay", &["product", "fast"][..]),
        ("delay", &["product", "1s", "--probability", "5"][..]),
        ("delay", &["product", "1s", "--probability", "0.005"][..]),
        ("outage", &["product", "--key", "x"][..]),
        ("delay", &["database", "1s"][..]),
    ] {
        let out = chaos(script, args, "http://127.0.0.1:9");
        assert_eq!(out.status.code(), Some(2), "{script} {args:?}: {}", text(&out));
    }
    let remote = chaos("outage", &["product"], "http://10.1.2.3:8083");
    assert_eq!(remote.status.code(), Some(2));
    assert!(text(&remote).contains("non-loopback"));
    for script in ["delay", "errors", "outage", "hang", "reset", "status"] {
        let help = chaos(script, &["--help"], "http://127.0.0.1:9");
        assert!(help.status.success() && text(&help).contains(&format!("chaos/{script}")), "{script} --help");
    }
}
