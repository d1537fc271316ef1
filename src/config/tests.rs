use super::parse::line_column;
use super::*;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("test.toml")).map_err(|e| e.to_string())
}

#[test]
fn empty_file_gives_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(
        config.listen,
        vec![ListenAddr::Tcp("127.0.0.1:7878".parse().unwrap())]
    );
    assert_eq!(config.max_connections, 10_000);
    assert_eq!(config.max_line_bytes, 65_536);
    assert_eq!(config.idle_timeout, Duration::from_secs(300));
    assert_eq!(config.request_timeout, Duration::from_secs(30));
    assert_eq!(config.drain_timeout, Duration::from_secs(10));
    assert_eq!(config.spin_before_sleep, Duration::from_micros(10));
    assert_eq!(config.max_buffered_bytes, 256 << 20);
    assert_eq!(config.max_connections_per_client, 0);
    assert!(config.proxy_protocol_from.is_empty());
    assert_eq!(config.proxy_header_timeout, Duration::from_secs(3));
    assert!(config.agent_listen.is_empty());
    assert_eq!(config.drain_grace, Duration::ZERO);
    assert!(config.metrics_listen.is_empty());
    assert_eq!(config.log_level, LogLevel::Info);
    assert!(config.workers >= 1);
}

#[test]
fn every_key_is_read() {
    let config = parse(
        "workers = 3\nlisten = [\"[::1]:9000\", \"/run/x.sock\"]\nmax_connections = 5\n\
         max_line_bytes = 10\nidle_timeout_ms = 100\nrequest_timeout_ms = 200\n\
         drain_timeout_ms = 0\nspin_before_sleep_us = 0\nlog_level = \"debug\"\n\
         metrics_listen = [\"127.0.0.1:9787\", \"/run/m.sock\"]\n\
         max_buffered_bytes = 2097152\nmax_connections_per_client = 4\n\
         proxy_protocol_from = [\"10.0.0.0/8\", \"::1/128\", \"unix\"]\n\
         proxy_header_timeout_ms = 500\n\
         agent_listen = [\"127.0.0.1:9788\"]\ndrain_grace_ms = 1500\n",
    )
    .unwrap();
    assert_eq!(config.workers, 3);
    assert_eq!(
        config.listen,
        vec![
            ListenAddr::Tcp("[::1]:9000".parse().unwrap()),
            ListenAddr::Unix("/run/x.sock".into())
        ]
    );
    assert_eq!(config.max_connections, 5);
    assert_eq!(config.max_line_bytes, 10);
    assert_eq!(config.idle_timeout, Duration::from_millis(100));
    assert_eq!(config.request_timeout, Duration::from_millis(200));
    assert_eq!(config.drain_timeout, Duration::ZERO);
    assert_eq!(config.spin_before_sleep, Duration::ZERO);
    assert_eq!(config.log_level, LogLevel::Debug);
    assert_eq!(config.max_buffered_bytes, 2 << 20);
    assert_eq!(config.max_connections_per_client, 4);
    assert_eq!(config.proxy_header_timeout, Duration::from_millis(500));
    assert_eq!(
        config.agent_listen,
        vec![ListenAddr::Tcp("127.0.0.1:9788".parse().unwrap())]
    );
    assert_eq!(config.drain_grace, Duration::from_millis(1500));
    assert!(config.proxy_protocol_from.trusts_unix());
    assert!(config
        .proxy_protocol_from
        .trusts_ip("10.1.2.3".parse().unwrap()));
    assert!(config.proxy_protocol_from.trusts_ip("::1".parse().unwrap()));
    assert!(!config
        .proxy_protocol_from
        .trusts_ip("192.168.0.1".parse().unwrap()));
    assert_eq!(
        config.metrics_listen,
        vec![
            ListenAddr::Tcp("127.0.0.1:9787".parse().unwrap()),
            ListenAddr::Unix("/run/m.sock".into())
        ]
    );
}

#[test]
fn range_bounds() {
    // (key, lowest allowed, highest allowed)
    let table: &[(&str, i64, i64)] = &[
        ("workers", 1, 1024),
        ("max_connections", 1, 1_000_000),
        ("max_line_bytes", 1, 16 << 20),
        ("idle_timeout_ms", 10, 86_400_000),
        ("request_timeout_ms", 10, 86_400_000),
        ("drain_timeout_ms", 0, 3_600_000),
        ("spin_before_sleep_us", 0, 1_000),
        ("max_buffered_bytes", 1 << 20, 1 << 40),
        ("max_connections_per_client", 0, 1_000_000),
        ("proxy_header_timeout_ms", 10, 60_000),
        ("drain_grace_ms", 0, 600_000),
    ];
    for &(key, min, max) in table {
        assert!(parse(&format!("{key} = {min}")).is_ok(), "{key} = {min}");
        assert!(parse(&format!("{key} = {max}")).is_ok(), "{key} = {max}");
        for bad in [min - 1, max + 1] {
            let msg = parse(&format!("\n{key} = {bad}")).unwrap_err();
            assert_eq!(
                msg,
                format!("test.toml: 2: {key} = {bad} is out of range (allowed {min}..={max})")
            );
        }
    }
}

#[test]
fn syntax_error_names_line_and_column() {
    let msg = parse("workers = 2\nmax_line_bytes = = 3\n").unwrap_err();
    assert!(msg.starts_with("test.toml: 2:"), "{msg}");
}

#[test]
fn unknown_key_is_an_error() {
    let msg = parse("workers = 2\n\nwrokers = 3\n").unwrap_err();
    assert!(
        msg.starts_with("test.toml: 3:1: unknown field `wrokers`"),
        "{msg}"
    );
}

#[test]
fn wrong_type_and_bad_log_level() {
    let msg = parse("workers = \"four\"").unwrap_err();
    assert!(msg.starts_with("test.toml: 1:11:"), "{msg}");
    let msg = parse("log_level = \"loud\"").unwrap_err();
    assert!(msg.starts_with("test.toml: 1:13:"), "{msg}");
    assert!(msg.contains("`warn`"), "{msg}");
}

#[test]
fn bad_listen_entries() {
    let msg = parse("listen = [\"localhost\"]").unwrap_err();
    assert_eq!(
        msg,
        "test.toml: 1: listen entry 'localhost' is neither IP:port nor an absolute Unix socket path"
    );
    let msg = parse("listen = []").unwrap_err();
    assert_eq!(msg, "test.toml: 1: listen must name at least one address");
    let msg = parse("\nmetrics_listen = [\"9787\"]").unwrap_err();
    assert_eq!(
        msg,
        "test.toml: 2: metrics_listen entry '9787' is neither IP:port nor an absolute Unix socket path"
    );
    assert!(parse("metrics_listen = []")
        .unwrap()
        .metrics_listen
        .is_empty());
}

#[test]
fn positions_come_from_the_value_not_from_the_key_name() {
    // A quoted key: no line starts with `workers =`.
    let msg = parse("# tuned\n\"workers\" = 0\n").unwrap_err();
    assert_eq!(
        msg,
        "test.toml: 2: workers = 0 is out of range (allowed 1..=1024)"
    );
    // The key's name, followed by `=`, at the start of a line inside
    // another key's multi-line string (validated later than `workers`).
    let msg = parse("listen = ['''\nworkers = 4\n''']\n\nworkers = 0\n").unwrap_err();
    assert!(msg.starts_with("test.toml: 5: workers = 0 "), "{msg}");
    // A multi-line array: the bad entry's own line, not the key's.
    let msg = parse("listen = [\n  \"127.0.0.1:1\",\n  \"nowhere\",\n]\n").unwrap_err();
    assert!(
        msg.starts_with("test.toml: 3: listen entry 'nowhere'"),
        "{msg}"
    );
}

#[test]
fn a_type_error_names_its_key() {
    let msg = parse("# workers = \"x\"\nmax_line_bytes = 1\nworkers = \"four\"\n").unwrap_err();
    assert!(msg.starts_with("test.toml: 3:11: workers: "), "{msg}");
    let msg = parse("listen = [\"/a\",\n          7]").unwrap_err();
    assert!(msg.starts_with("test.toml: 2:11: listen: "), "{msg}");
    let msg = parse("log_level = \"loud\"").unwrap_err();
    assert!(msg.starts_with("test.toml: 1:13: log_level: "), "{msg}");
}

#[test]
fn columns_count_characters() {
    let msg = parse("\"wörkers\" = 2").unwrap_err();
    assert!(msg.starts_with("test.toml: 1:1: unknown field"), "{msg}");
    let msg = parse("listen = [\"/é\", 1]").unwrap_err();
    assert!(msg.starts_with("test.toml: 1:17: listen: "), "{msg}");
}

#[test]
fn line_column_of_offsets() {
    assert_eq!(line_column("ab\ncd", 0), (1, 1));
    assert_eq!(line_column("ab\ncd", 4), (2, 2));
    assert_eq!(line_column("é\néx", 5), (2, 2));
    assert_eq!(line_column("ab", 99), (1, 3));
}

#[test]
fn a_bad_proxy_source_names_its_line_and_entry() {
    let msg =
        parse("proxy_protocol_from = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n]\n").unwrap_err();
    assert!(
        msg.starts_with("test.toml: 3: proxy_protocol_from entry '10.0.0.0/33': "),
        "{msg}"
    );
    let msg = parse("proxy_protocol_from = [\"balancer\"]").unwrap_err();
    assert!(
        msg.starts_with("test.toml: 1: proxy_protocol_from entry 'balancer': "),
        "{msg}"
    );
}
