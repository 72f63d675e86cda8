//! A webhook and SMS receiver for the tests: a real HTTP server on loopback that records
//! every request and answers as its path says.
//!
//! | path | answer |
//! | --- | --- |
//! | `/ok/...` | 200 |
//! | `/fail/N/...` | 500 for the first N requests of each `webhook-id`, then 200 |
//! | `/down/...` | 500 while the receiver is broken ([`Receiver::fix`] mends it), then 200 |
//! | `/hang/...` | nothing for a minute |
//! | `/gone/...` | 410 |
//! | `/2010-04-01/Accounts/{sid}/Messages.json` | 201, Twilio-shaped |

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    seen: Mutex<HashMap<String, usize>>,
    broken: AtomicBool,
}

/// The running receiver (stopped when dropped).
pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        drop(handle.stop(false));
    }
}

async fn answer(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> HttpResponse {
    let path = req.path().to_string();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let id = headers.get("webhook-id").cloned().unwrap_or_default();
    let mut parts = path.trim_start_matches('/').split('/');
    let status: u16 = match parts.next() {
        Some("ok") => 200,
        Some("fail") => {
            let n: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let mut seen = shared.seen.lock().expect("lock");
            let count = seen.entry(id).or_default();
            *count += 1;
            if *count > n { 200 } else { 500 }
        }
        Some("down") => {
            if shared.broken.load(Ordering::SeqCst) {
                500
            } else {
                200
            }
        }
        Some("gone") => 410,
        Some("hang") => {
            // Recorded on arrival: its answer never comes in a test's time.
            shared.received.lock().expect("lock").push(Received {
                path: path.clone(),
                headers: headers.clone(),
                body: String::from_utf8_lossy(&body).into_owned(),
                status: 0,
            });
            tokio::time::sleep(Duration::from_secs(60)).await;
            return HttpResponse::Ok().finish();
        }
        Some("2010-04-01") => 201,
        _ => 404,
    };
    shared.received.lock().expect("lock").push(Received {
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        status,
    });
    let mut res =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"));
    if status == 201 {
        return res.json(serde_json::json!({"sid": "SM0001", "status": "queued"}));
    }
    res.body("thanks")
}

impl Receiver {
    /// Starts on a free loopback port.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            broken: AtomicBool::new(true),
            ..Shared::default()
        });
        let data = web::Data::new(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(answer))
        })
        .workers(2)
        .backlog(4096)
        .max_connections(100_000)
        .bind(("127.0.0.1", 0))
        .expect("bind");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            port,
            shared,
            handle,
        }
    }

    /// A URL of this receiver (`path` as in the module table).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn received_at(&self, prefix: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    /// `/down/...` answers 200 from now on.
    pub fn fix(&self) {
        self.shared.broken.store(false, Ordering::SeqCst);
    }
}
