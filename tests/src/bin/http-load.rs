//! `http-load ADDR PATH [CONNECTIONS] [SECONDS]`: closed-loop HTTP/1.1 GET load over
//! keep-alive connections, one thread each; prints one JSON line with requests/s and
//! latency percentiles. Used by `scripts/bench-daemon` to measure Oasis and its peer the
//! same way (the standard-library client keeps the client's own cost small and equal).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: http-load ADDR PATH [CONNECTIONS] [SECONDS]");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let path = args[2].clone();
    let conns: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4);
    let secs: f64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let (addr, path) = (addr.clone(), path.clone());
            std::thread::spawn(move || run(&addr, &path, deadline))
        })
        .collect();
    let mut latencies_us = Vec::new();
    let mut errors = 0u64;
    for w in workers {
        match w.join() {
            Ok((lat, err)) => {
                latencies_us.extend(lat);
                errors += err;
            }
            Err(_) => errors += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((latencies_us.len() - 1) as f64 * p).round() as usize;
        latencies_us[i] as f64 / 1000.0
    };
    println!(
        "{{\"requests\": {}, \"errors\": {errors}, \"seconds\": {elapsed:.3}, \"req_s\": {:.1}, \"latency_ms_p50\": {:.3}, \"latency_ms_p99\": {:.3}, \"connections\": {conns}}}",
        latencies_us.len(),
        latencies_us.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
}

/// One connection's loop: (latencies in microseconds, errors).
fn run(addr: &str, path: &str, deadline: Instant) -> (Vec<u64>, u64) {
    let mut lat = Vec::new();
    let mut errors = 0;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    'outer: while Instant::now() < deadline {
        let Ok(stream) = TcpStream::connect(addr) else {
            errors += 1;
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok(mut writer) = stream.try_clone() else {
            errors += 1;
            continue;
        };
        let mut reader = BufReader::new(stream);
        while Instant::now() < deadline {
            let t = Instant::now();
            if writer.write_all(request.as_bytes()).is_err() || !read_response(&mut reader) {
                errors += 1;
                continue 'outer;
            }
            lat.push(t.elapsed().as_micros() as u64);
        }
        break;
    }
    (lat, errors)
}

/// Reads one response with a Content-Length body; false on error or a non-2xx status.
fn read_response(reader: &mut BufReader<TcpStream>) -> bool {
    let mut line = String::new();
    let mut status_ok = false;
    let mut length = 0usize;
    let mut first = true;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if first {
            status_ok = line
                .split_whitespace()
                .nth(1)
                .is_some_and(|s| s.starts_with('2'));
            first = false;
            continue;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).is_ok() && status_ok
}
