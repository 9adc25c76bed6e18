//! Test module for the WasmEdge shim: the first argument picks what to do, so one module
//! covers every end-to-end check.
use std::io::{BufRead, Write};
use std::process::exit;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]);
    match (args.first().map(String::as_str), rest) {
        (None, _) => println!("Hello from WasmEdge!"),
        (Some("echo"), words) => println!("{}", words.join(" ")),
        (Some("env"), [name]) => match std::env::var(name) {
            Ok(value) => println!("{value}"),
            Err(e) => fail(&format!("env {name}: {e}")),
        },
        (Some("cat"), [path]) => match std::fs::read(path) {
            Ok(bytes) => std::io::stdout().write_all(&bytes).unwrap(),
            Err(e) => fail(&format!("cat {path}: {e}")),
        },
        (Some("write"), [path, text]) => {
            if let Err(e) = std::fs::write(path, text) {
                fail(&format!("write {path}: {e}"));
            }
        }
        // One line only: `ctr run` never closes stdin, so waiting for EOF would hang.
        (Some("stdin"), []) => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
                fail(&format!("stdin: {e}"));
            }
            println!("got: {}", line.trim_end_matches(['\r', '\n']));
        }
        (Some("exit"), [code]) => exit(code.parse().unwrap_or_else(|_| fail("exit: bad code"))),
        (Some("sleep"), [secs]) => {
            let secs = secs.parse().unwrap_or_else(|_| fail("sleep: bad seconds"));
            std::thread::sleep(std::time::Duration::from_secs(secs));
            println!("done");
        }
        // Busy for SECS: never blocks in a WASI call, so it can be frozen and thawed (a frozen
        // poll_oneoff comes back from WasmEdge as EINTR, which Rust's sleep treats as fatal).
        (Some("spin"), [secs]) => {
            let secs = secs.parse().unwrap_or_else(|_| fail("spin: bad seconds"));
            let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
            println!("done");
        }
        (Some("stderr"), words) => eprintln!("{}", words.join(" ")),
        (Some("pwd"), []) => match std::env::current_dir() {
            Ok(dir) => println!("{}", dir.display()),
            Err(e) => fail(&format!("pwd: {e}")),
        },
        (Some(cmd), _) => fail(&format!("unknown command or wrong arguments: {cmd}")),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("hello: {msg}");
    exit(1)
}
