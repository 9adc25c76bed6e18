//! A JavaScript runtime for WASI: QuickJS (through rquickjs) compiled to wasm32-wasip1.
//!
//! `runtime.wasm SCRIPT [ARGS...]` runs SCRIPT, a file in the container: as an ES module when its
//! name ends in `.mjs` or it uses `import`/`export`, else as a classic script. The host side
//! here is small (files, stdio, exit, clock); the JavaScript face of it (`console`, `process`,
//! `require('fs')`, timers) is `prelude.js`.

use std::io::{BufRead, Read, Write};
use std::process::exit;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rquickjs::{
    context::EvalOptions,
    loader::{BuiltinLoader, BuiltinResolver, FileResolver, ScriptLoader},
    prelude::{Opt, Rest},
    CatchResultExt, CaughtError, Context, Ctx, Exception, Function, Module, Object, Promise,
    Runtime, Value,
};

const PRELUDE: &str = include_str!("prelude.js");

/// Node's built-in modules this runtime offers to `import`, each re-exporting a global of the prelude.
const BUILTIN_MODULES: &[(&str, &str)] = &[
    ("fs", "__builtin_fs"),
    ("node:fs", "__builtin_fs"),
    ("process", "process"),
    ("node:process", "process"),
];

/// The first argument that makes this a warm slot: see [`serve_request`].
const REQUEST_FLAG: &str = "--request-on-stdin";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(REQUEST_FLAG) {
        let code = serve_request(&args[0], args.get(2).map(String::as_str));
        flush();
        exit(code);
    }
    let Some(script) = args.get(1).cloned() else {
        eprintln!("usage: {} SCRIPT [ARGS...]", args.first().map_or("js", |a| a.as_str()));
        exit(2);
    };
    let source = match std::fs::read(&script) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot read {script}: {e}");
            exit(2);
        }
    };
    let code = match setup(&args) {
        Ok((rt, ctx)) => run(&rt, &ctx, &script, source),
        Err(code) => code,
    };
    flush();
    exit(code);
}

/// A warm slot of the execute service: the runtime and the prelude are ready before the request
/// comes, and then the file `ready` (if named) is made. The request is stdin's first line, JSON
/// `{"script", "args", "env", "code"}`, then `code` bytes of the script; the rest of stdin is
/// the script's own.
fn serve_request(argv0: &str, ready: Option<&str>) -> i32 {
    let (rt, ctx) = match setup(&[argv0.to_string()]) {
        Ok(ready) => ready,
        Err(code) => return code,
    };
    if let Some(ready) = ready {
        if let Err(e) = std::fs::write(ready, "") {
            eprintln!("warm slot: making {ready}: {e}");
            return 2;
        }
    }
    let mut stdin = std::io::stdin().lock();
    let mut header = String::new();
    if stdin.read_line(&mut header).unwrap_or(0) == 0 {
        eprintln!("warm slot: no request on stdin");
        return 2;
    }
    let request = ctx.with(|ctx| -> rquickjs::Result<(String, usize)> {
        let request: Object = ctx.json_parse(header)?.get()?;
        let script: String = request.get("script")?;
        let mut argv = vec![argv0.to_string(), script.clone()];
        argv.extend(request.get::<_, Vec<String>>("args")?);
        let env_in: Object = request.get("env")?;
        let process: Object = ctx.globals().get("process")?;
        let env: Object = process.get("env")?;
        for key in env_in.keys::<String>() {
            let key = key?;
            let value: String = env_in.get(&key)?;
            std::env::set_var(&key, &value);
            env.set(key, value)?;
        }
        process.set("argv", argv)?;
        Ok((script, request.get::<_, f64>("code")? as usize))
    });
    let (script, length) = match request {
        Ok(request) => request,
        Err(e) => {
            eprintln!("warm slot: malformed request: {e}");
            return 2;
        }
    };
    let mut source = vec![0; length];
    if let Err(e) = stdin.read_exact(&mut source) {
        eprintln!("warm slot: reading the script: {e}");
        return 2;
    }
    drop(stdin);
    run(&rt, &ctx, &script, source)
}

fn flush() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

/// The runtime, its module loaders and the prelude (with `args` as process.argv).
fn setup(args: &[String]) -> Result<(Runtime, Context), i32> {
    let rt = Runtime::new().expect("QuickJS runtime");
    rt.set_max_stack_size(1 << 20);
    let mut resolver = BuiltinResolver::default();
    let mut loader = BuiltinLoader::default();
    for (name, global) in BUILTIN_MODULES {
        resolver.add_module(*name);
        let src = format!(
            "const m = globalThis.{global}; export default m; export const {{ {} }} = m;",
            exports_of(global).join(", ")
        );
        loader.add_module(*name, src);
    }
    rt.set_loader((resolver, FileResolver::default()), (loader, ScriptLoader::default()));
    rt.set_host_promise_rejection_tracker(Some(Box::new(|ctx, promise, reason, handled| {
        if let Ok(f) = ctx.globals().get::<_, Function>("__onRejection") {
            let _ = f.call::<_, ()>((promise, reason, handled));
        }
    })));
    let ctx = Context::full(&rt).expect("QuickJS context");
    ctx.with(|ctx| -> Result<(), i32> {
        install_host(&ctx, args).map_err(|e| report(&ctx, e))?;
        let mut opts = EvalOptions::default();
        opts.filename = Some("prelude.js".into());
        ctx.eval_with_options::<(), _>(PRELUDE, opts).catch(&ctx).map_err(|e| report_caught(&ctx, e))
    })?;
    Ok((rt, ctx))
}

/// Evaluates the script, then runs the event loop to its end; the exit code.
fn run(rt: &Runtime, ctx: &Context, script: &str, source: Vec<u8>) -> i32 {
    let is_module = script.ends_with(".mjs")
        || (!script.ends_with(".cjs") && unsafe {
            rquickjs::qjs::JS_DetectModule(source.as_ptr().cast(), source.len() as _)
        });

    // Evaluate the script; a module's evaluation is a promise.
    let started = ctx.with(|ctx| -> Result<(), i32> {
        if is_module {
            let promise: Promise = Module::evaluate(ctx.clone(), script, source)
                .catch(&ctx)
                .map_err(|e| report_caught(&ctx, e))?;
            ctx.globals().set("__main", promise).map_err(|e| report(&ctx, e))?;
        } else {
            let mut opts = EvalOptions::default();
            opts.filename = Some(script.into());
            opts.strict = false;
            ctx.eval_with_options::<(), _>(source, opts).catch(&ctx).map_err(|e| report_caught(&ctx, e))?;
        }
        Ok(())
    });
    if let Err(code) = started {
        return code;
    }

    // The event loop: promise jobs, then the earliest timer, until neither is left.
    loop {
        loop {
            match rt.execute_pending_job() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let code = e.0.with(|ctx| {
                        let err = ctx.catch();
                        report_value(&ctx, err)
                    });
                    return code;
                }
            }
        }
        let step = ctx.with(|ctx| -> Result<bool, i32> {
            if let Ok(main) = ctx.globals().get::<_, Promise>("__main") {
                if let Some(Err(e)) = main.result::<Value>() {
                    let _ = e;
                    let err = ctx.catch();
                    return Err(report_value(&ctx, err));
                }
            }
            let unhandled: Function = ctx.globals().get("__reportUnhandled").map_err(|e| report(&ctx, e))?;
            if unhandled.call::<_, bool>(()).catch(&ctx).map_err(|e| report_caught(&ctx, e))? {
                return Err(1);
            }
            let tick: Function = ctx.globals().get("__runTimer").map_err(|e| report(&ctx, e))?;
            tick.call::<_, bool>(()).catch(&ctx).map_err(|e| report_caught(&ctx, e))
        });
        match step {
            Ok(true) => continue,
            Ok(false) => break,
            Err(code) => return code,
        }
    }
    ctx.with(|ctx| {
        let process: Object = ctx.globals().get("process").unwrap();
        process.get::<_, Option<i32>>("exitCode").ok().flatten().unwrap_or(0)
    })
}

/// Names a builtin module exports besides its default.
fn exports_of(global: &str) -> Vec<&'static str> {
    match global {
        "__builtin_fs" => vec!["readFileSync", "writeFileSync", "appendFileSync", "existsSync", "readdirSync"],
        _ => vec!["argv", "env", "exit", "stdout", "stderr", "stdin"],
    }
}

/// Prints an uncaught exception the way the prelude formats errors; returns the exit code 1.
fn report_caught<'js>(ctx: &Ctx<'js>, e: CaughtError<'js>) -> i32 {
    match e {
        CaughtError::Exception(ex) => report_value(ctx, ex.into_value()),
        CaughtError::Value(v) => report_value(ctx, v),
        CaughtError::Error(e) => {
            eprintln!("Uncaught {e}");
            1
        }
    }
}

fn report<'js>(ctx: &Ctx<'js>, e: rquickjs::Error) -> i32 {
    if matches!(e, rquickjs::Error::Exception) {
        let v = ctx.catch();
        return report_value(ctx, v);
    }
    eprintln!("Uncaught {e}");
    1
}

fn report_value<'js>(ctx: &Ctx<'js>, v: Value<'js>) -> i32 {
    let _ = std::io::stdout().flush();
    // process.exit() unwinds through here as a marker object, see the prelude.
    if let Some(obj) = v.as_object() {
        if let Ok(Some(code)) = obj.get::<_, Option<i32>>("__exitCode") {
            return code;
        }
    }
    let text = ctx
        .globals()
        .get::<_, Function>("__formatUncaught")
        .and_then(|f| f.call::<_, String>((v.clone(),)))
        .unwrap_or_else(|_| format!("{v:?}"));
    eprintln!("{text}");
    1
}

fn throw(ctx: &Ctx, msg: String) -> rquickjs::Error {
    Exception::throw_message(ctx, &msg)
}

/// `__host`: what the prelude builds on.
fn install_host<'js>(ctx: &Ctx<'js>, args: &[String]) -> rquickjs::Result<()> {
    let host = Object::new(ctx.clone())?;
    host.set("args", args.to_vec())?;
    let env = Object::new(ctx.clone())?;
    for (k, v) in std::env::vars() {
        env.set(k, v)?;
    }
    host.set("env", env)?;
    host.set(
        "write",
        Function::new(ctx.clone(), |fd: i32, text: String| {
            let _ = if fd == 2 {
                let _ = std::io::stdout().flush();
                std::io::stderr().write_all(text.as_bytes())
            } else {
                std::io::stdout().write_all(text.as_bytes())
            };
        })?,
    )?;
    host.set(
        "readFile",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, path: String| -> rquickjs::Result<String> {
            let _ = std::io::stdout().flush();
            let bytes = if path == "/dev/stdin" || path == "0" {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf).map(|_| buf)
            } else {
                std::fs::read(&path)
            };
            bytes
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| throw(&ctx, format!("{}: {path}", io_error(&e))))
        })?,
    )?;
    host.set(
        "writeFile",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, path: String, data: String, append: Opt<bool>| -> rquickjs::Result<()> {
                let result = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .append(append.0.unwrap_or(false))
                    .truncate(!append.0.unwrap_or(false))
                    .open(&path)
                    .and_then(|mut f| f.write_all(data.as_bytes()));
                result.map_err(|e| throw(&ctx, format!("{}: {path}", io_error(&e))))
            },
        )?,
    )?;
    host.set("exists", Function::new(ctx.clone(), |path: String| std::path::Path::new(&path).exists())?)?;
    host.set(
        "readdir",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, path: String| -> rquickjs::Result<Vec<String>> {
            let entries = std::fs::read_dir(&path).map_err(|e| throw(&ctx, format!("{}: {path}", io_error(&e))))?;
            let mut names: Vec<String> =
                entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            Ok(names)
        })?,
    )?;
    host.set(
        "readLine",
        Function::new(ctx.clone(), || -> Option<String> {
            let _ = std::io::stdout().flush();
            let mut line = String::new();
            match std::io::stdin().lock().read_line(&mut line) {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(line.trim_end_matches(['\n', '\r']).to_string()),
            }
        })?,
    )?;
    host.set(
        "exit",
        Function::new(ctx.clone(), |code: Opt<i32>| -> () {
            flush();
            exit(code.0.unwrap_or(0))
        })?,
    )?;
    host.set(
        "sleep",
        Function::new(ctx.clone(), |ms: f64| {
            if ms > 0.0 {
                let _ = std::io::stdout().flush();
                std::thread::sleep(Duration::from_micros((ms * 1000.0) as u64));
            }
        })?,
    )?;
    host.set(
        "now",
        Function::new(ctx.clone(), || {
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
        })?,
    )?;
    host.set("print", Function::new(ctx.clone(), |parts: Rest<String>| println!("{}", parts.0.join(" ")))?)?;
    ctx.globals().set("__host", host)?;
    Ok(())
}

/// Node's error codes for the common cases, so scripts can test `err.code`-like messages.
fn io_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => "ENOENT: no such file or directory".into(),
        PermissionDenied => "EACCES: permission denied".into(),
        AlreadyExists => "EEXIST: file already exists".into(),
        _ => e.to_string(),
    }
}
