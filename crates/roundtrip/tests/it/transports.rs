//! The transports that need no external service, against real sockets and directories:
//! the `http` producer, the `webhook` listener, and the `dir` producer and listener.
//!
//! Nothing here sleeps to synchronise: tests wait on the store's feed of committed
//! observations (with a timeout that only fires when something is broken), or on a
//! listener's `stop()`, which returns only after everything it accepted is committed.

use roundtrip_core::run::RunStatus;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use roundtrip::core::correlate::Correlator;
use roundtrip::core::model::{
    ByteSize, ChannelSpec, CorrelationRule, DirChannel, DurationSpec, HttpChannel, WebhookChannel,
};
use roundtrip::core::observation::Observation;
use roundtrip::store::{RunRecord, Store};
use roundtrip::transport::{
    DriverContext, ListenError, ObservationSink, Outgoing, ProduceError, RunningListener, registry,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

async fn new_store(run_id: &str) -> Arc<dyn Store> {
    let store = roundtrip::store::open("sqlite::memory:")
        .await
        .expect("open an in-memory store");
    store
        .create_run(&RunRecord {
            run_id: run_id.to_owned(),
            suite: "transports".to_owned(),
            suite_path: "transports.yaml".to_owned(),
            started_at: 0,
            finished_at: None,
            status: RunStatus::Running,
            owner: None,
        })
        .await
        .expect("create the run");
    store
}

fn sink(
    store: &Arc<dyn Store>,
    run_id: &str,
    channel: &str,
    spec: &ChannelSpec,
) -> ObservationSink {
    let correlator = Correlator::new(&CorrelationRule::default()).expect("default rule");
    ObservationSink::new(
        Arc::clone(store),
        run_id,
        channel,
        Arc::new(correlator),
        registry::max_payload(spec),
    )
}

fn ctx(base_dir: &Path) -> DriverContext {
    DriverContext {
        base_dir: base_dir.to_owned(),
    }
}

fn outgoing(body: &[u8], correlation_id: &str, key: Option<&str>) -> Outgoing {
    Outgoing {
        body: Bytes::copy_from_slice(body),
        content_type: "application/json",
        headers: vec![
            ("x-correlation-id".to_owned(), correlation_id.to_owned()),
            ("x-roundtrip-run".to_owned(), "run-1".to_owned()),
        ],
        correlation_id: correlation_id.to_owned(),
        key: key.map(str::to_owned),
        fifo: None,
    }
}

/// The next committed observation of `run_id` on the feed.
async fn next_observation(
    feed: &mut broadcast::Receiver<Arc<Observation>>,
    run_id: &str,
) -> Arc<Observation> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let observation = feed.recv().await.expect("the store's feed is open");
            if observation.run_id == run_id {
                return observation;
            }
        }
    })
    .await
    .expect("an observation is committed in time")
}

async fn observations(store: &Arc<dyn Store>, run_id: &str) -> Vec<Observation> {
    store
        .observations(run_id, 0, 100)
        .await
        .expect("read observations")
}

// ---------------------------------------------------------------------------------------
// http producer

/// A request as the test server saw it.
#[derive(Debug)]
struct Seen {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// Serves `status` and `answer` to every request, reporting each on the channel.
async fn test_server(
    status: StatusCode,
    answer: &'static str,
) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Seen {
                    method,
                    uri,
                    headers,
                    body,
                });
                (status, answer)
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the test server");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), rx)
}

fn http_channel(url: String, method: &str, timeout: Option<Duration>) -> ChannelSpec {
    ChannelSpec::Http(HttpChannel {
        url,
        method: method.to_owned(),
        headers: [("authorization".to_owned(), "Bearer t0ken".to_owned())].into(),
        timeout: timeout.map(DurationSpec),
    })
}

#[tokio::test]
async fn http_producer_sends_method_url_headers_and_body() {
    let (base, mut seen) = test_server(StatusCode::ACCEPTED, "").await;
    let spec = http_channel(format!("{base}/orders?src=rt"), "PUT", None);
    let producer = registry::producer("orders_in", &spec, &ctx(Path::new("."))).expect("plan");

    let body = br#"{"id":1,"item":"widget"}"#;
    let receipt = producer
        .send(outgoing(body, "c-1", None))
        .await
        .expect("a 202 is accepted");
    assert_eq!(receipt.detail.as_deref(), Some("HTTP 202"));

    let request = seen.recv().await.expect("the server saw the request");
    assert_eq!(request.method, Method::PUT);
    assert_eq!(request.uri.path(), "/orders");
    assert_eq!(request.uri.query(), Some("src=rt"));
    assert_eq!(request.headers["authorization"], "Bearer t0ken");
    assert_eq!(request.headers["x-correlation-id"], "c-1");
    assert_eq!(request.headers["x-roundtrip-run"], "run-1");
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(&request.body[..], body);

    // The same producer sends again (connection reuse is the client's business; the
    // second send must simply work).
    producer
        .send(outgoing(b"", "c-2", None))
        .await
        .expect("a second send");
    let request = seen.recv().await.expect("the second request");
    assert_eq!(request.headers["x-correlation-id"], "c-2");
    assert!(request.body.is_empty());
}

#[tokio::test]
async fn http_producer_reports_a_refusal_with_its_status_and_an_excerpt() {
    const ANSWER: &str = concat!(
        r#"{"error":"the warehouse is full","detail":""#,
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        r#"END"}"#
    );
    let (base, _seen) = test_server(StatusCode::INTERNAL_SERVER_ERROR, ANSWER).await;
    let spec = http_channel(format!("{base}/orders"), "POST", None);
    let producer = registry::producer("orders_in", &spec, &ctx(Path::new("."))).expect("plan");

    let err = producer
        .send(outgoing(b"{}", "c-1", None))
        .await
        .expect_err("a 500 is a refusal");
    let ProduceError::Rejected { channel, message } = &err else {
        panic!("expected a refusal, got {err:?}");
    };
    assert_eq!(channel, "orders_in");
    assert!(
        message.contains("HTTP 500 Internal Server Error: {\"error\":\"the warehouse is full\""),
        "{message}"
    );
    assert!(
        message.contains(&format!("{base}/orders")),
        "names the URL: {message}"
    );
    let excerpt = message
        .split_once(": {")
        .map(|(_, rest)| rest)
        .expect("an excerpt");
    assert!(excerpt.ends_with('…'), "{message}");
    assert!(excerpt.chars().count() <= 200, "{message}");
    assert!(!message.contains("END"), "{message}");
}

#[tokio::test]
async fn http_producer_reports_an_unreachable_url() {
    // A port that was just free: nothing listens there any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let url = format!("http://127.0.0.1:{port}/orders");
    let spec = http_channel(url.clone(), "POST", None);
    let producer = registry::producer("orders_in", &spec, &ctx(Path::new("."))).expect("plan");

    let err = producer
        .send(outgoing(b"{}", "c-1", None))
        .await
        .expect_err("nothing listens");
    let ProduceError::Unreachable { channel, source } = &err else {
        panic!("expected unreachable, got {err:?}");
    };
    assert_eq!(channel, "orders_in");
    assert_eq!(source.to_string(), format!("POST {url}: cannot connect"));
}

#[tokio::test]
async fn http_producer_times_out_when_the_sut_does_not_answer() {
    // Accepts connections and reads requests, but never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("http://{addr}/slow");
    let spec = http_channel(url.clone(), "POST", Some(Duration::from_millis(200)));
    let producer = registry::producer("slow_in", &spec, &ctx(Path::new("."))).expect("plan");

    let err = producer
        .send(outgoing(b"{}", "c-1", None))
        .await
        .expect_err("no answer");
    let ProduceError::Unreachable { source, .. } = &err else {
        panic!("expected unreachable, got {err:?}");
    };
    assert_eq!(
        source.to_string(),
        format!("POST {url}: no answer within 200ms")
    );
}

// ---------------------------------------------------------------------------------------
// webhook listener

fn webhook_channel(listen: &str, max_payload: Option<u64>) -> ChannelSpec {
    ChannelSpec::Webhook(WebhookChannel {
        listen: listen.to_owned(),
        path: "/events".to_owned(),
        max_payload: max_payload.map(ByteSize),
    })
}

/// A started webhook on a free port, with its store.
async fn start_webhook(
    run_id: &str,
    max_payload: Option<u64>,
) -> (Arc<dyn Store>, ObservationSink, RunningListener) {
    let store = new_store(run_id).await;
    let spec = webhook_channel("127.0.0.1:0", max_payload);
    let sink = sink(&store, run_id, "orders_out", &spec);
    let listener = registry::listener("orders_out", &spec, &ctx(Path::new("."))).expect("plan");
    let running = listener
        .start(sink.clone())
        .await
        .expect("start the webhook");
    (store, sink, running)
}

/// A started webhook with these limits, and the `host:port` it listens on.
async fn start_limited_webhook(
    run_id: &str,
    limits: roundtrip::transport::webhook::Limits,
) -> (Arc<dyn Store>, ObservationSink, RunningListener, String) {
    use roundtrip::transport::Listener as _;
    let store = new_store(run_id).await;
    let spec = webhook_channel("127.0.0.1:0", None);
    let sink = sink(&store, run_id, "orders_out", &spec);
    let ChannelSpec::Webhook(hook) = &spec else {
        unreachable!("a webhook spec")
    };
    let listener = roundtrip::transport::webhook::WebhookListener::new("orders_out", hook)
        .expect("plan")
        .with_limits(limits);
    let running = Box::new(listener)
        .start(sink.clone())
        .await
        .expect("start the webhook");
    let addr = running
        .endpoint
        .trim_start_matches("http://")
        .trim_end_matches("/events")
        .to_owned();
    (store, sink, running, addr)
}

fn short_limits() -> roundtrip::transport::webhook::Limits {
    roundtrip::transport::webhook::Limits {
        header_timeout: Duration::from_millis(200),
        body_timeout: Duration::from_millis(200),
        max_connections: 2,
    }
}

/// Reads until the server closes the connection; what it sent before.
async fn read_to_close(socket: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(PATIENCE, socket.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server never closed the connection");
    out
}

#[tokio::test]
async fn webhook_closes_connections_that_are_slow_to_send_headers_or_sit_idle() {
    let (_store, _sink, running, addr) = start_limited_webhook("run-slow", short_limits()).await;
    // Slowloris: headers that never end.
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"POST /events HTTP/1.1\r\nhost: x\r\nx-more:")
        .await
        .expect("write");
    let answered = read_to_close(&mut slow).await;
    assert!(!answered.starts_with(b"HTTP/1.1 200"), "{answered:?}");
    // A kept-alive connection that goes idle after one request.
    let mut idle = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    idle.write_all(b"POST /events HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .expect("write");
    let answered = read_to_close(&mut idle).await;
    assert!(answered.starts_with(b"HTTP/1.1 200"), "{answered:?}");
    running.stop().await;
}

#[tokio::test]
async fn webhook_answers_408_to_a_body_that_does_not_arrive() {
    let (store, sink, running, addr) = start_limited_webhook("run-trickle", short_limits()).await;
    let mut socket = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    socket
        .write_all(b"POST /events HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"a\":")
        .await
        .expect("write");
    let mut head = [0u8; 12];
    tokio::time::timeout(PATIENCE, socket.read_exact(&mut head))
        .await
        .expect("an answer in time")
        .expect("read");
    assert_eq!(&head, b"HTTP/1.1 408");
    drop(socket);
    running.stop().await;
    assert_eq!(sink.stats().faults.load(Ordering::Relaxed), 1);
    assert!(observations(&store, "run-trickle").await.is_empty());
}

#[tokio::test]
async fn webhook_serves_a_bounded_number_of_connections() {
    let limits = roundtrip::transport::webhook::Limits {
        header_timeout: Duration::from_secs(30),
        ..short_limits()
    };
    let (_store, sink, running, addr) = start_limited_webhook("run-many", limits).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        // One complete request each, so the server has certainly taken the connection.
        c.write_all(b"POST /events HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .expect("write");
        let mut head = [0u8; 12];
        c.read_exact(&mut head).await.expect("an answer");
        assert_eq!(&head, b"HTTP/1.1 200");
        held.push(c);
    }
    let mut third = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let _ = third
        .write_all(b"POST /events HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        .await;
    let answered = read_to_close(&mut third).await;
    assert!(
        answered.is_empty(),
        "the third connection is closed unanswered: {answered:?}"
    );
    assert_eq!(sink.stats().faults.load(Ordering::Relaxed), 1);
    drop(held);
    running.stop().await;
}

#[tokio::test]
async fn webhook_keeps_header_values_that_are_not_utf8_exactly() {
    let (store, _sink, running, addr) = start_limited_webhook("run-bin", short_limits()).await;
    let mut socket = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    socket
        .write_all(
            b"POST /events HTTP/1.1\r\nhost: x\r\nx-bin: \xff\xfeok\r\ncontent-length: 2\r\n\r\n{}",
        )
        .await
        .expect("write");
    let mut head = [0u8; 12];
    socket.read_exact(&mut head).await.expect("an answer");
    assert_eq!(&head, b"HTTP/1.1 200");
    drop(socket);
    running.stop().await;
    let recorded = observations(&store, "run-bin").await;
    assert_eq!(recorded[0].header("x-bin"), Some("//5vaw=="));
    assert_eq!(
        recorded[0].header("x-roundtrip-base64-headers"),
        Some("x-bin")
    );
}

#[tokio::test]
async fn webhook_commits_each_post_before_answering() {
    let (store, sink, running) = start_webhook("run-wh", None).await;
    assert!(
        running.endpoint.starts_with("http://127.0.0.1:") && running.endpoint.ends_with("/events"),
        "{}",
        running.endpoint
    );
    assert!(
        !running.endpoint.contains(":0/"),
        "the real port: {}",
        running.endpoint
    );
    assert_eq!(
        running.delivery,
        roundtrip::transport::Delivery::AtLeastOnce
    );
    assert!(!running.polling);

    let client = reqwest::Client::new();
    let response = client
        .post(&running.endpoint)
        .header("content-type", "application/json")
        .header("X-Correlation-Id", "c-42")
        .header("x-extra", "yes")
        .body(r#"{"item":"WIDGET","qty":2}"#)
        .send()
        .await
        .expect("the webhook answers");
    assert!(response.status().is_success(), "{}", response.status());

    // The answer came after the commit: the observation is readable right now.
    let recorded = observations(&store, "run-wh").await;
    assert_eq!(recorded.len(), 1);
    let o = &recorded[0];
    assert_eq!(o.channel, "orders_out");
    assert_eq!(o.correlation_id.as_deref(), Some("c-42"));
    assert_eq!(
        o.payload.json,
        Some(serde_json::json!({"item": "WIDGET", "qty": 2}))
    );
    assert_eq!(o.header("x-extra"), Some("yes"));
    assert_eq!(o.header("x-correlation-id"), Some("c-42"));

    // A PUT is an observation too.
    let response = client
        .put(&running.endpoint)
        .body("second")
        .send()
        .await
        .expect("answer");
    assert!(response.status().is_success());
    assert_eq!(observations(&store, "run-wh").await.len(), 2);
    assert_eq!(sink.stats().recorded.load(Ordering::Relaxed), 2);
    assert_eq!(sink.stats().faults.load(Ordering::Relaxed), 0);

    let endpoint = running.endpoint.clone();
    running.stop().await;
    assert!(
        client.post(&endpoint).body("x").send().await.is_err(),
        "a stopped webhook accepts no more connections"
    );
}

#[tokio::test]
async fn webhook_records_any_body_raw() {
    // A limit of 16 bytes, so that truncation is cheap to check.
    let (store, _sink, running) = start_webhook("run-bodies", Some(16)).await;
    let client = reqwest::Client::new();
    let bodies: [&[u8]; 5] = [
        br#"{"a":1}"#,
        b"plain text",
        b"",
        &[0xff, 0xfe, 0x00, 0x80],
        b"0123456789abcdefOVERFLOW",
    ];
    for body in bodies {
        let response = client
            .post(&running.endpoint)
            .body(body.to_vec())
            .send()
            .await
            .expect("answer");
        assert!(response.status().is_success(), "{}", response.status());
    }
    let recorded = observations(&store, "run-bodies").await;
    let got: Vec<(&[u8], u64, bool, Option<&serde_json::Value>)> = recorded
        .iter()
        .map(|o| {
            (
                &o.payload.bytes[..],
                o.payload.size,
                o.payload.truncated,
                o.payload.json.as_ref(),
            )
        })
        .collect();
    let json = serde_json::json!({"a": 1});
    assert_eq!(
        got,
        vec![
            (&br#"{"a":1}"#[..], 7, false, Some(&json)),
            (&b"plain text"[..], 10, false, None),
            (&b""[..], 0, false, None),
            (&[0xff, 0xfe, 0x00, 0x80][..], 4, false, None),
            (&b"0123456789abcdef"[..], 24, true, None),
        ]
    );
    running.stop().await;
}

#[tokio::test]
async fn webhook_accepts_bodies_beyond_axums_default_limit() {
    // 3 MiB: more than axum's default 2 MB extractor limit and the 1 MiB payload limit.
    let (store, _sink, running) = start_webhook("run-big", None).await;
    let body = vec![b'x'; 3 << 20];
    let response = reqwest::Client::new()
        .post(&running.endpoint)
        .body(body)
        .send()
        .await
        .expect("answer");
    assert!(response.status().is_success(), "{}", response.status());
    let recorded = observations(&store, "run-big").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].payload.size, 3 << 20);
    assert!(recorded[0].payload.truncated);
    assert_eq!(
        recorded[0].payload.bytes.len(),
        roundtrip::transport::DEFAULT_MAX_PAYLOAD
    );
    running.stop().await;
}

#[tokio::test]
async fn webhook_refuses_bodies_beyond_its_hard_cap() {
    let (store, sink, running) = start_webhook("run-cap", None).await;
    let addr = running
        .endpoint
        .trim_start_matches("http://")
        .trim_end_matches("/events")
        .to_owned();
    // Announce a body over the cap; the server answers without reading it.
    let mut socket = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    socket
        .write_all(
            b"POST /events HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000\r\n\r\n{\"partial\":",
        )
        .await
        .expect("write");
    let mut head = [0u8; 12];
    tokio::time::timeout(PATIENCE, socket.read_exact(&mut head))
        .await
        .expect("an answer in time")
        .expect("read");
    assert_eq!(&head, b"HTTP/1.1 413");
    drop(socket);
    running.stop().await;
    assert_eq!(sink.stats().faults.load(Ordering::Relaxed), 1);
    assert!(observations(&store, "run-cap").await.is_empty());
}

#[tokio::test]
async fn webhook_answers_wrong_paths_and_methods_without_recording() {
    let (store, sink, running) = start_webhook("run-wrong", None).await;
    let client = reqwest::Client::new();
    let base = running.endpoint.trim_end_matches("/events").to_owned();

    let response = client
        .post(format!("{base}/other"))
        .body("{}")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = client.get(&running.endpoint).send().await.expect("answer");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST, PUT");
    // And a good one, to show that the listener records what it should.
    let response = client
        .post(&running.endpoint)
        .body("ok")
        .send()
        .await
        .expect("answer");
    assert!(response.status().is_success());

    running.stop().await;
    let recorded = observations(&store, "run-wrong").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].payload.bytes, b"ok");
    assert_eq!(sink.stats().faults.load(Ordering::Relaxed), 2);
    assert_eq!(sink.stats().recorded.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn webhook_answers_503_when_the_store_cannot_commit() {
    let (store, sink, running) = start_webhook("run-closed", None).await;
    store.close().await.expect("close the store");
    let response = reqwest::Client::new()
        .post(&running.endpoint)
        .body("{}")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    running.stop().await;
    assert_eq!(sink.stats().faults.load(Ordering::Relaxed), 1);
    assert_eq!(sink.stats().recorded.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn webhook_on_a_port_in_use_fails_to_start_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let store = new_store("run-busy").await;
    let spec = webhook_channel(&addr, None);
    let listener = registry::listener("orders_out", &spec, &ctx(Path::new("."))).expect("plan");
    let err = listener
        .start(sink(&store, "run-busy", "orders_out", &spec))
        .await
        .expect_err("the port is taken");
    let ListenError::Start {
        channel, message, ..
    } = &err;
    assert_eq!(channel, "orders_out");
    assert_eq!(
        message,
        &format!(
            "{addr} is already in use (another process listens there; pick another port or \
             stop it)"
        )
    );
    drop(taken);
}

// ---------------------------------------------------------------------------------------
// dir producer and listener

fn dir_channel(path: &str, suffix: Option<&str>) -> ChannelSpec {
    ChannelSpec::Dir(DirChannel {
        path: path.to_owned(),
        file_name: None,
        suffix: suffix.map(str::to_owned),
        max_payload: None,
    })
}

/// Puts a file into `dir` the way writers must: written aside, then renamed in.
fn rename_in(dir: &Path, name: &str, body: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp-test"));
    std::fs::write(&tmp, body).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn dir_producer_and_listener_round_trip() {
    let base = tempfile::tempdir().expect("temp dir");
    let run = "run-dir";
    let store = new_store(run).await;
    let spec = dir_channel("exchange/out", None);
    let context = ctx(base.path());
    let producer = registry::producer("files", &spec, &context).expect("plan producer");
    let listener = registry::listener("files", &spec, &context).expect("plan listener");
    let mut feed = store.subscribe();
    let running = listener
        .start(sink(&store, run, "files", &spec))
        .await
        .expect("start");
    let dir = base.path().join("exchange/out");
    assert!(dir.is_dir(), "the listener creates the directory");
    assert_eq!(running.endpoint, dir.display().to_string());
    assert!(running.polling);
    assert_eq!(
        running.delivery,
        roundtrip::transport::Delivery::AtLeastOnce
    );

    let receipt = producer
        .send(outgoing(br#"{"n":1}"#, "c-1", None))
        .await
        .expect("send");
    assert_eq!(
        receipt.detail.as_deref(),
        Some(dir.join("c-1.json").display().to_string().as_str())
    );
    let first = next_observation(&mut feed, run).await;
    assert_eq!(first.key.as_deref(), Some("c-1.json"));
    assert_eq!(first.payload.bytes, br#"{"n":1}"#);
    assert_eq!(first.payload.json, Some(serde_json::json!({"n": 1})));

    // A second file, with a key: observed, and the first one is not observed again.
    producer
        .send(outgoing(b"two", "c-2", Some("second.txt")))
        .await
        .expect("send");
    let second = next_observation(&mut feed, run).await;
    assert_eq!(second.key.as_deref(), Some("second.txt"));
    assert_eq!(second.payload.bytes, b"two");

    running.stop().await;
    let recorded = observations(&store, run).await;
    let keys: Vec<_> = recorded.iter().map(|o| o.key.as_deref()).collect();
    assert_eq!(keys, [Some("c-1.json"), Some("second.txt")]);
    // Atomic writes leave no temporary files behind.
    assert_eq!(names_in(&dir), ["c-1.json", "second.txt"]);
}

#[tokio::test]
async fn dir_producer_rejects_keys_that_are_not_file_names_and_names_unwritable_paths() {
    let base = tempfile::tempdir().expect("temp dir");
    let producer =
        registry::producer("files", &dir_channel("out", None), &ctx(base.path())).expect("plan");
    let err = producer
        .send(outgoing(b"x", "c-1", Some("../escape.json")))
        .await
        .expect_err("not a plain name");
    assert!(matches!(err, ProduceError::Rejected { .. }), "{err:?}");

    // A regular file where the directory should be.
    std::fs::write(base.path().join("blocked"), b"").expect("write");
    let producer = registry::producer("files", &dir_channel("blocked", None), &ctx(base.path()))
        .expect("plan");
    let err = producer
        .send(outgoing(b"x", "c-1", None))
        .await
        .expect_err("cannot write");
    let ProduceError::Unreachable { source, .. } = &err else {
        panic!("expected unreachable, got {err:?}");
    };
    assert!(
        source
            .to_string()
            .contains(&base.path().join("blocked").display().to_string()),
        "{source}"
    );
}

#[tokio::test]
async fn dir_listener_ignores_files_present_before_it_started() {
    let dir = tempfile::tempdir().expect("temp dir");
    rename_in(dir.path(), "old.json", b"old");
    let run = "run-old";
    let store = new_store(run).await;
    let spec = dir_channel(&dir.path().display().to_string(), None);
    let mut feed = store.subscribe();
    let running = registry::listener("files", &spec, &ctx(Path::new("/")))
        .expect("plan")
        .start(sink(&store, run, "files", &spec))
        .await
        .expect("start");

    rename_in(dir.path(), "new.json", b"new");
    let observed = next_observation(&mut feed, run).await;
    assert_eq!(observed.key.as_deref(), Some("new.json"));

    running.stop().await;
    let keys: Vec<_> = observations(&store, run)
        .await
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, [Some("new.json".to_owned())]);
}

#[tokio::test]
async fn dir_listener_ignores_dotfiles_temporary_files_and_other_suffixes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = "run-ignore";
    let store = new_store(run).await;
    let spec = dir_channel(&dir.path().display().to_string(), Some(".json"));
    let mut feed = store.subscribe();
    let running = registry::listener("files", &spec, &ctx(Path::new("/")))
        .expect("plan")
        .start(sink(&store, run, "files", &spec))
        .await
        .expect("start");

    std::fs::write(dir.path().join(".hidden.json"), b"hidden").expect("write");
    std::fs::write(dir.path().join("upload.json.tmp-1234"), b"half").expect("write");
    std::fs::write(dir.path().join("notes.txt"), b"notes").expect("write");
    std::fs::create_dir(dir.path().join("sub.json")).expect("mkdir");
    rename_in(dir.path(), "real.json", b"{}");
    let observed = next_observation(&mut feed, run).await;
    assert_eq!(observed.key.as_deref(), Some("real.json"));

    // stop() scans once more: anything not ignored would be recorded by now.
    running.stop().await;
    let keys: Vec<_> = observations(&store, run)
        .await
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, [Some("real.json".to_owned())]);
}

#[tokio::test]
async fn dir_listener_records_a_file_renamed_in_just_before_stop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = "run-last";
    let store = new_store(run).await;
    let spec = dir_channel(&dir.path().display().to_string(), None);
    let running = registry::listener("files", &spec, &ctx(Path::new("/")))
        .expect("plan")
        .start(sink(&store, run, "files", &spec))
        .await
        .expect("start");

    rename_in(dir.path(), "last.bin", &[0, 1, 2, 255]);
    running.stop().await;

    let recorded = observations(&store, run).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].key.as_deref(), Some("last.bin"));
    assert_eq!(recorded[0].payload.bytes, [0, 1, 2, 255]);
}
