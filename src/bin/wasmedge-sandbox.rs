//! `wasmedge-sandbox`: the execute service (`serve`), an HTTP API that runs untrusted code
//! through containerd and the WasmEdge shim. The logic is in `containerd_shim_wasmedge::sandbox`.
use clap::{Parser, Subcommand};
use containerd_shim_wasmedge::sandbox::{serve, ServeArgs};

#[derive(Parser)]
#[command(name = "wasmedge-sandbox", about = "Run untrusted code through containerd and the WasmEdge shim, over HTTP")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the execute API.
    Serve(ServeArgs),
}

fn main() -> anyhow::Result<()> {
    if containerd_shim_wasmedge::version::asked() {
        print!("{}", containerd_shim_wasmedge::version::text("wasmedge-sandbox", None));
        return Ok(());
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let Command::Serve(args) = Cli::parse().command;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(args))
}
