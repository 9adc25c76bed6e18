//! Example workload of the build helper (`wasmedge-image build images/rust`). The first
//! argument picks what to do; every example language answers the same commands.
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::exit;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = &args[args.len().min(1)..];
    match (args.first().map(String::as_str), rest) {
        (None, _) => println!("Hello from Rust!"),
        (Some("echo"), words) => println!("{}", words.join(" ")),
        (Some("env"), [name]) => match std::env::var(name) {
            Ok(value) => println!("{value}"),
            Err(_) => fail(&format!("{name} is not set")),
        },
        (Some("stdin"), []) => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).unwrap_or_else(|e| fail(&e.to_string()));
            println!("got: {}", line.trim_end_matches(['\r', '\n']));
        }
        (Some("cat"), [path]) => match std::fs::read(path) {
            Ok(bytes) => std::io::stdout().write_all(&bytes).unwrap(),
            Err(e) => fail(&format!("{path}: {e}")),
        },
        (Some("exit"), [code]) => exit(code.parse().unwrap_or_else(|_| fail("exit: bad code"))),
        (Some("wordfreq"), [path]) => wordfreq(path),
        // The dependency from crates.io: parse, then print with the keys sorted.
        (Some("json"), [text]) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) => println!("{value}"),
            Err(e) => fail(&format!("json: {e}")),
        },
        _ => fail("usage: [echo WORDS...|env NAME|stdin|cat PATH|exit N|wordfreq PATH|json TEXT]"),
    }
}

/// The three most frequent words of a text file (ties in alphabetical order).
fn wordfreq(path: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (word, n) in ranked.iter().take(3) {
        println!("{word} {n}");
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("hello-rust: {msg}");
    exit(1)
}
