//! Progress of long transfers and compiles (downloads, pushes, AOT): a bar on a terminal, a line
//! at the start and at the end otherwise, so logs of CI runs stay readable.
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Read};
use std::time::Instant;

/// One transfer or step, reported on stderr.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    done: u64,
    started: Instant,
}

impl Progress {
    /// A transfer of `total` bytes (unknown when `None`).
    pub fn bytes(label: &str, total: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total {
                Some(total) => ProgressBar::new(total).with_style(
                    ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                        .expect("a valid template")
                        .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}").expect("a valid template"),
                ),
            };
            bar.set_message(label.to_string());
            bar
        });
        if bar.is_none() {
            match total {
                Some(total) => eprintln!("{label}: {} to go", human(total)),
                None => eprintln!("{label}: started"),
            }
        }
        Progress { bar, label: label.to_string(), done: 0, started: Instant::now() }
    }

    /// A step without a byte count, such as a compile.
    pub fn step(label: &str) -> Self {
        Self::bytes(label, None)
    }

    pub fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    /// Wraps a reader so that what is read advances this progress.
    pub fn reader<R: Read>(self, inner: R) -> ProgressReader<R> {
        ProgressReader { inner, progress: self }
    }

    /// Ends the progress with a last line: what was moved and how long it took.
    pub fn finish(self) {
        let took = self.started.elapsed().as_secs_f64();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.done > 0 {
            eprintln!("{}: {} in {took:.1}s", self.label, human(self.done));
        } else {
            eprintln!("{}: done in {took:.1}s", self.label);
        }
    }
}

/// A reader that reports what passes through it.
pub struct ProgressReader<R> {
    inner: R,
    progress: Progress,
}

impl<R> ProgressReader<R> {
    pub fn finish(self) {
        self.progress.finish()
    }
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// Bytes for people: `85.2 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(85 * 1024 * 1024 + 200 * 1024), "85.2 MiB");
    }

    #[test]
    fn a_reader_counts_what_passes() {
        let mut reader = Progress::bytes("test", Some(5)).reader(&b"hello"[..]);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(reader.progress.done, 5);
        reader.finish();
    }
}
