//! Hostile test module for the shim's isolation and limit tests: the first argument picks an
//! attack. Each mode either runs into a limit of the shim or reports, on stdout, what it could
//! reach, so a test can tell exactly what the module saw.
use std::hint::black_box;
use std::io::Write;
use std::process::exit;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match (args.first().map(String::as_str), rest.as_slice()) {
        // Allocates and fills 1 MiB blocks until the allocator gives up, which aborts the module
        // (a trap): what a careless or malicious program does.
        (Some("membomb"), []) => {
            let mut blocks = Vec::new();
            loop {
                blocks.push(black_box(vec![0xa5u8; 1 << 20]));
                if blocks.len() % 1024 == 0 {
                    eprintln!("hostile: {} MiB and counting", blocks.len());
                }
            }
        }
        // The same, but noticing the failure: prints how much it got, then exits 0.
        (Some("membomb-try"), []) => {
            let mut blocks: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut block = Vec::new();
                if block.try_reserve_exact(1 << 20).is_err() {
                    println!("allocation failed after {} MiB", blocks.len());
                    return;
                }
                block.resize(1 << 20, 0xa5);
                blocks.push(black_box(block));
            }
        }
        (Some("spin"), []) => {
            let mut n = 0u64;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        (Some("recurse"), []) => println!("{}", recurse(black_box(0))),
        (Some("cat"), [path]) => match std::fs::read(path) {
            Ok(bytes) => std::io::stdout().write_all(&bytes).unwrap(),
            Err(e) => fail(&format!("cat {path}: {e}")),
        },
        (Some("write"), [path, text]) => match std::fs::write(path, text) {
            Ok(()) => println!("wrote {path}"),
            Err(e) => fail(&format!("write {path}: {e}")),
        },
        (Some("ls"), [path]) => match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut names: Vec<String> =
                    entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                names.sort();
                println!("{}", names.join(" "));
            }
            Err(e) => fail(&format!("ls {path}: {e}")),
        },
        (Some(cmd), _) => fail(&format!("unknown command or wrong arguments: {cmd}")),
        (None, _) => fail("usage: hostile membomb|membomb-try|spin|recurse|cat PATH|write PATH TEXT|ls PATH"),
    }
}

/// Never returns: every frame keeps a buffer alive across the call, so it is no tail call.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 16]);
    recurse(depth + 1) + frame[black_box(3)]
}

fn fail(msg: &str) -> ! {
    eprintln!("hostile: {msg}");
    exit(1)
}
