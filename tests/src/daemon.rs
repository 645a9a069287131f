//! A real `oasis serve` process for end-to-end tests: started on `127.0.0.1:0` with its own
//! data directory, its address read from its first stdout line, killed when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Everything it wrote to stderr so far is collected by a thread into this file.
    pub log: PathBuf,
    /// Time from spawn to the listening line.
    pub startup: Duration,
    /// Everything it wrote to stdout, collected by a thread into this file.
    pub stdout_log: PathBuf,
}

/// How to start a daemon beyond its arguments.
#[derive(Debug, Default)]
pub struct Launch<'a> {
    /// Extra variables.
    pub env: &'a [(&'a str, &'a str)],
    /// Runs `oasis` through this command line (e.g. `["sh", "-c", "ulimit -n 512; exec \"$0\" \"$@\""]`).
    pub wrapper: &'a [&'a str],
    /// The listen address [default: `127.0.0.1:0`].
    pub listen: Option<&'a str>,
}

impl Daemon {
    /// A daemon on `data_dir` serving the default model on two threads, and that model's
    /// id.
    pub fn serving_default_model(data_dir: &Path) -> (Daemon, String) {
        let model = crate::model_path().to_string_lossy().into_owned();
        let d = Daemon::start(data_dir, &["--model", &model, "--threads", "2"]);
        let (_, models) = d.get("/v1/models");
        let id = models["data"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (d, id)
    }

    /// Starts `oasis serve --listen 127.0.0.1:0 --data-dir DATA_DIR ARGS...`.
    pub fn start(data_dir: &Path, args: &[&str]) -> Daemon {
        Self::start_with_env(data_dir, args, &[])
    }

    pub fn start_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Self::launch(
            data_dir,
            args,
            &Launch {
                env,
                ..Launch::default()
            },
        )
    }

    pub fn launch(data_dir: &Path, args: &[&str], how: &Launch<'_>) -> Daemon {
        let env = how.env;
        let log = data_dir.with_extension(format!("log-{}", std::process::id()));
        let stdout_log = data_dir.with_extension(format!("stdout-{}", std::process::id()));
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
        let mut cmd = match how.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(crate::oasis_bin());
                c
            }
            None => Command::new(crate::oasis_bin()),
        };
        cmd.args([
            "serve",
            "--listen",
            how.listen.unwrap_or("127.0.0.1:0"),
            "--data-dir",
        ])
        .arg(data_dir)
        .args(args)
        .env_remove("OASIS_LISTEN")
        .env_remove("OASIS_MODELS")
        .env_remove("OASIS_CONFIG")
        .stdout(Stdio::piped())
        .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start oasis serve: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next();
        let Some(Ok(line)) = first else {
            let _ = child.wait();
            panic!(
                "oasis serve exited before listening: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let url = line
            .strip_prefix("oasis: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let startup = started.elapsed();
        // Keep draining stdout so the daemon never blocks on a full pipe, into a file.
        let mut out =
            std::fs::File::create(&stdout_log).unwrap_or_else(|e| panic!("stdout file: {e}"));
        let _ = writeln!(out, "{line}");
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                let _ = writeln!(out, "{l}");
            }
        });
        let addr = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        Daemon {
            child,
            url,
            addr,
            log,
            startup,
            stdout_log,
        }
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (up to `limit`) for the exit status.
    pub fn terminate(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// GET `path`: (status, JSON body or Null).
    pub fn get(&self, path: &str) -> (u16, Value) {
        let resp = raw_request(&self.addr, "GET", path, &[], b"");
        (resp.status, resp.json())
    }

    /// POST `body` as JSON to `path`: (status, JSON body).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self.post_raw(path, body);
        (resp.status, resp.json())
    }

    /// PATCH `body` as JSON to `path`: (status, JSON body).
    pub fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self.send_json("PATCH", path, body);
        (resp.status, resp.json())
    }

    /// POSTs a streaming request and returns the `data:` payloads in order.
    pub fn post_stream(&self, path: &str, body: &Value) -> (u16, Vec<String>) {
        let resp = self.post_raw(path, body);
        let events = String::from_utf8_lossy(&resp.body)
            .lines()
            .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
            .collect();
        (resp.status, events)
    }

    fn post_raw(&self, path: &str, body: &Value) -> RawResponse {
        self.send_json("POST", path, body)
    }

    /// `body` as JSON with `method` to `path`.
    fn send_json(&self, method: &str, path: &str, body: &Value) -> RawResponse {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        raw_request(
            &self.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            &bytes,
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP/1.1 exchange (the body read to the end, chunked encoding undone).
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request over a fresh connection (`Connection: close`) and reads the answer.
/// Any bytes may be sent, which is the point: malformed bodies and headers.
pub fn raw_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let _ = stream.write_all(head.as_bytes());
    // The server may answer (413) and close before taking the whole body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> RawResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
    out
}

/// POSTs `body` as JSON to `path` and returns the connection without reading anything.
pub fn send_request(addr: &str, path: &str, body: &Value) -> TcpStream {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&bytes);
    stream
}

/// Opens a streaming request and returns the socket positioned after the response head,
/// for tests that act mid-stream (disconnect, kill).
pub fn open_stream(addr: &str, path: &str, body: &Value) -> BufReader<TcpStream> {
    let stream = send_request(addr, path, body);
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    reader
}
