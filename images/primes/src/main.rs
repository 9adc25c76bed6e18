//! Compute-heavy workload for `make bench`: the sum of the primes below N, by trial division, so
//! the time goes into integer arithmetic and branches rather than memory. Built both for
//! wasm32-wasip1 and natively, to compare WasmEdge with native code on the same program.
//!
//! `primes [N]` (N defaults to 2000000) prints the sum on stdout and the time the computation
//! took, measured inside the program, on stderr as `primes: compute_ms=<ms>`.
use std::process::exit;
use std::time::Instant;

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 {
        return false;
    }
    let mut d = 3;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

fn sum_of_primes_below(n: u64) -> u64 {
    (2..n).filter(|&k| is_prime(k)).sum()
}

fn main() {
    let n = match std::env::args().nth(1).map(|a| a.parse::<u64>()) {
        None => 2_000_000,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("primes: usage: primes [N]");
            exit(2)
        }
    };
    let start = Instant::now();
    let sum = sum_of_primes_below(n);
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    println!("{sum}");
    eprintln!("primes: compute_ms={ms:.3}");
}
