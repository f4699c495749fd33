//! A deliberately badly-behaved plugin. Its `mode` config key picks the misbehaviour, so
//! one component covers every case the sandbox must contain:
//! `loop`, `memory`, `ungranted-origin`, `ungranted-secret`, `panic`, `log-flood`,
//! `huge-response`, `http-budget`, `stack-overflow`, `host-header` (a granted URL with its
//! `Host` header set to config `host_header`, to reach another virtual host), `steal-key`
//! (asks every import for the key `signing_key` it was granted and logs all it got, hex for
//! bytes, for the test to search for key material), and `ok` (behaves).

wit_bindgen::generate!({ world: "plugin", path: "../../../wit" });

use exports::hookhost::plugin::handler::{Event, Failure, Guest, Outcome};
use hookhost::plugin::{config, http, keys, log, secrets};

struct Hostile;

fn get(url: &str) -> Result<http::Response, http::HttpError> {
    http::send(&http::Request {
        method: http::Method::Get,
        url: url.to_string(),
        headers: vec![],
        body: None,
        timeout_ms: None,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything each import answers about the key `name`, one line per question.
fn steal_key(name: &str) -> Vec<String> {
    let mut got = vec![
        format!("secrets.get({name}) = {:?}", secrets::get(name)),
        format!("config.get({name}) = {:?}", config::get(name)),
        format!("keys.info({name}) = {:?}", keys::info(name)),
    ];
    let huge = vec![0u8; 70_000];
    let messages: [&[u8]; 3] = [b"", b"-----BEGIN PRIVATE KEY-----", &huge];
    for alg in [keys::Algorithm::Rs256, keys::Algorithm::Ps256, keys::Algorithm::Es256] {
        for message in messages {
            let answer = match keys::sign(name, alg, message) {
                Ok(signature) => format!("signature {}", hex(&signature)),
                Err(e) => format!("{e:?}"),
            };
            got.push(format!("keys.sign({name}, {alg:?}, {} bytes) = {answer}", message.len()));
        }
    }
    got.push(format!("keys.sign(other_key) = {:?}", keys::sign("other_key", keys::Algorithm::Rs256, b"m")));
    got
}

fn describe(e: &http::HttpError) -> String {
    match e {
        http::HttpError::Denied(m) => format!("denied: {m}"),
        http::HttpError::InvalidRequest(m) => format!("invalid-request: {m}"),
        http::HttpError::BudgetExhausted(m) => format!("budget-exhausted: {m}"),
        http::HttpError::Timeout(m) => format!("timeout: {m}"),
        http::HttpError::Connect(m) => format!("connect: {m}"),
        http::HttpError::ResponseTooLarge(m) => format!("response-too-large: {m}"),
    }
}

#[inline(never)]
#[allow(unconditional_recursion)] // the point: overflow the guest stack
fn recurse(n: u64, buf: &mut [u8; 256]) -> u64 {
    buf[(n % 256) as usize] = n as u8;
    let mut next = [0u8; 256];
    recurse(n + 1, &mut next) + u64::from(buf[0])
}

impl Guest for Hostile {
    fn handle(event: Event) -> Result<Outcome, Failure> {
        let mode = config::get("mode").unwrap_or_else(|| "ok".into());
        let url = config::get("url").unwrap_or_else(|| "http://127.0.0.1:9/".into());
        match mode.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "ungranted-origin" | "huge-response" => match get(&url) {
                Ok(r) => Ok(Outcome { summary: format!("got {} with {} bytes", r.status, r.body.len()) }),
                Err(e) => Err(Failure::Permanent(describe(&e))),
            },
            "host-header" => {
                let host = config::get("host_header").unwrap_or_else(|| "internal.example".into());
                let sent = http::send(&http::Request {
                    method: http::Method::Get,
                    url: url.clone(),
                    headers: vec![("Host".to_string(), host)],
                    body: None,
                    timeout_ms: None,
                });
                match sent {
                    Ok(r) => Ok(Outcome { summary: format!("got {} with {} bytes", r.status, r.body.len()) }),
                    Err(e) => Err(Failure::Permanent(describe(&e))),
                }
            }
            "http-budget" => {
                for i in 0..10_000 {
                    if let Err(e) = get(&url) {
                        return Err(Failure::Permanent(format!("after {i} requests: {}", describe(&e))));
                    }
                }
                Ok(Outcome { summary: "never refused".into() })
            }
            "ungranted-secret" => match secrets::get("client_secret") {
                Some(v) => Ok(Outcome { summary: format!("read a secret of {} bytes", v.len()) }),
                None => Err(Failure::Permanent("secret client_secret is not available".into())),
            },
            "steal-key" => {
                let got = steal_key("signing_key");
                for line in &got {
                    log::log(log::Level::Info, line);
                }
                Ok(Outcome { summary: format!("asked {} questions about signing_key", got.len()) })
            }
            "panic" => panic!("hostile plugin panicked on purpose for {}", event.id),
            "log-flood" => {
                for i in 0..100_000 {
                    log::log(log::Level::Info, &format!("flood line {i} {}", "x".repeat(100)));
                    println!("stdout flood line {i}");
                }
                Ok(Outcome { summary: "flooded".into() })
            }
            "stack-overflow" => {
                let mut buf = [0u8; 256];
                Ok(Outcome { summary: format!("{}", recurse(0, &mut buf)) })
            }
            "ok" => Ok(Outcome { summary: format!("ok {}", event.id) }),
            other => Err(Failure::Permanent(format!("unknown mode {other}"))),
        }
    }
}

export!(Hostile);
