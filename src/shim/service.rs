//! The ttrpc Task service: each RPC is a short operation on one [`Task`].
use super::{classify::classify, options, task::{IoPaths, Status, Task}};
use crate::container::{cgroup, rootfs, spawn::spawn, stdio::Stdio, Launch};
use crate::image::detect::Kind;
use anyhow::{anyhow, Context};
use containerd_shim::{
    api,
    monitor::{Subject, Topic},
    protos::{
        events::task::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskStart},
        protobuf::MessageDyn,
        topics,
        ttrpc::{self, Code},
    },
    publisher::RemotePublisher,
    util::{convert_to_any, timestamp},
    ExitSignal, TtrpcContext, TtrpcResult,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

type Tasks = Arc<Mutex<HashMap<String, Arc<Task>>>>;

#[derive(Clone)]
pub struct Service {
    namespace: String,
    publisher: Arc<RemotePublisher>,
    exit: Arc<ExitSignal>,
    tasks: Tasks,
}

fn rpc_error(code: Code, msg: impl std::fmt::Display) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.to_string()))
}

impl Service {
    pub fn new(namespace: &str, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> Service {
        let service = Service {
            namespace: namespace.to_string(),
            publisher: Arc::new(publisher),
            exit,
            tasks: Arc::default(),
        };
        let reaper = service.clone();
        std::thread::spawn(move || reaper.handle_exits());
        service
    }

    /// The containerd-shim crate reaps every child; its exits arrive here. Start holds the task
    /// lock from spawn until TaskStart is published, so no TaskExit can come before TaskStart.
    fn handle_exits(&self) {
        let exits = containerd_shim::monitor::monitor_subscribe(Topic::All).expect("subscribing to exits");
        for event in exits.rx.iter() {
            let Subject::Pid(pid) = event.subject else { continue };
            let task = {
                let tasks = self.tasks.lock().unwrap();
                tasks.values().find(|t| t.state().pid == Some(pid)).cloned()
            };
            if let Some(task) = task {
                self.exited(&task, pid, event.exit_code as u32);
            }
        }
    }

    fn exited(&self, task: &Task, pid: i32, status: u32) {
        let at = timestamp().unwrap_or_default();
        if task.set_exit(status, at.clone()) {
            log::info!("{}: exited with status {status}", task.id);
            self.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(TaskExit {
                container_id: task.id.clone(),
                id: task.id.clone(),
                pid: pid as u32,
                exit_status: status,
                exited_at: Some(at).into(),
                ..Default::default()
            }));
        }
    }

    fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self.publisher.publish(Default::default(), topic, &self.namespace, event) {
            log::warn!("publishing {topic}: {e}");
        }
    }

    fn task(&self, id: &str) -> TtrpcResult<Arc<Task>> {
        self.tasks.lock().unwrap().get(id).cloned().ok_or_else(|| rpc_error(Code::NOT_FOUND, format!("container {id} not found")))
    }

    /// The exec processes of the Task API are not supported yet; say so plainly.
    fn no_exec(exec_id: &str) -> TtrpcResult<()> {
        if exec_id.is_empty() {
            Ok(())
        } else {
            Err(rpc_error(Code::UNIMPLEMENTED, "exec is not supported by the wasmedge shim yet"))
        }
    }

    fn prepare(&self, req: &api::CreateTaskRequest) -> anyhow::Result<Task> {
        if req.terminal {
            return Err(anyhow!("a terminal (-t) is not supported for wasm containers"));
        }
        let bundle = Path::new(&req.bundle);
        let spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))
            .map_err(|e| anyhow!("{e}"))
            .context("malformed config.json")?;
        let defaults = options::engine_defaults(req.options.as_ref())?;
        let launch = Launch::from_spec(&req.id, bundle, &spec, &defaults)?;
        let mounted = rootfs::mount(&req.rootfs, &launch.rootfs)?;
        let undo = |e: anyhow::Error| {
            if mounted {
                let _ = rootfs::unmount(&launch.rootfs);
            }
            e
        };
        match classify(&spec, &launch) {
            Kind::Wasm(why) => log::info!("{}: wasm container: {why}", req.id),
            Kind::Linux => {
                return Err(undo(anyhow!(
                    "container {} is not a wasm container: {} is not a WebAssembly module and no wasm annotation is set \
                     (Linux containers are not supported by this shim yet)",
                    req.id,
                    launch.entrypoint.display()
                )))
            }
        }
        if let Some(path) = &launch.cgroup {
            let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
            cgroup::create(path, resources).map_err(undo)?;
        }
        let stdio = Stdio::open(&req.stdin, &req.stdout, &req.stderr).map_err(undo)?;
        let io = IoPaths { stdin: req.stdin.clone(), stdout: req.stdout.clone(), stderr: req.stderr.clone() };
        Ok(Task::new(&req.id, bundle, launch, io, stdio, mounted))
    }
}

impl containerd_shim::Task for Service {
    fn create(&self, _ctx: &TtrpcContext, req: api::CreateTaskRequest) -> TtrpcResult<api::CreateTaskResponse> {
        if self.tasks.lock().unwrap().contains_key(&req.id) {
            return Err(rpc_error(Code::ALREADY_EXISTS, format!("container {} already exists", req.id)));
        }
        let task = self.prepare(&req).map_err(|e| {
            log::error!("{}: create failed: {e:#}", req.id);
            rpc_error(Code::FAILED_PRECONDITION, format!("{e:#}"))
        })?;
        self.tasks.lock().unwrap().insert(req.id.clone(), Arc::new(task));
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(TaskIO { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal, ..Default::default() }).into(),
            ..Default::default()
        }));
        Ok(api::CreateTaskResponse::default())
    }

    fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        Self::no_exec(&req.exec_id)?;
        let tasks = self.tasks.lock().unwrap();
        let task = tasks.get(&req.id).ok_or_else(|| rpc_error(Code::NOT_FOUND, format!("container {} not found", req.id)))?;
        if task.state().status() != Status::Created {
            return Err(rpc_error(Code::FAILED_PRECONDITION, format!("container {} was already started", req.id)));
        }
        let stdio = task.stdio.lock().unwrap().take().expect("stdio of a created task");
        let pid = spawn(&task.launch, &stdio).map_err(|e| {
            log::error!("{}: start failed: {e:#}", req.id);
            rpc_error(Code::INTERNAL, format!("{e:#}"))
        })?;
        drop(stdio);
        task.state().pid = Some(pid.as_raw());
        log::info!("{}: started as pid {pid}", req.id);
        self.publish(topics::TASK_START_EVENT_TOPIC, Box::new(TaskStart {
            container_id: req.id.clone(),
            pid: pid.as_raw() as u32,
            ..Default::default()
        }));
        Ok(api::StartResponse { pid: pid.as_raw() as u32, ..Default::default() })
    }

    fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        Self::no_exec(&req.exec_id)?;
        let task = self.task(&req.id)?;
        let state = task.state();
        let status = match state.status() {
            Status::Created => api::Status::CREATED,
            Status::Running => api::Status::RUNNING,
            Status::Stopped => api::Status::STOPPED,
        };
        Ok(api::StateResponse {
            id: task.id.clone(),
            bundle: task.bundle.to_string_lossy().into_owned(),
            pid: state.pid.unwrap_or(0) as u32,
            status: status.into(),
            stdin: task.io.stdin.clone(),
            stdout: task.io.stdout.clone(),
            stderr: task.io.stderr.clone(),
            exit_status: state.exit.as_ref().map_or(0, |e| e.status),
            exited_at: state.exit.as_ref().map(|e| e.at.clone()).into(),
            ..Default::default()
        })
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        Self::no_exec(&req.exec_id)?;
        let exit = self.task(&req.id)?.wait();
        Ok(api::WaitResponse { exit_status: exit.status, exited_at: Some(exit.at).into(), ..Default::default() })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        Self::no_exec(&req.exec_id)?;
        let task = self.task(&req.id)?;
        let state = task.state();
        match (state.status(), state.pid) {
            (Status::Running, Some(pid)) => {
                drop(state);
                let signal = nix::sys::signal::Signal::try_from(req.signal as i32)
                    .map_err(|_| rpc_error(Code::INVALID_ARGUMENT, format!("invalid signal {}", req.signal)))?;
                match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(api::Empty::default()),
                    Err(e) => Err(rpc_error(Code::INTERNAL, format!("signalling {}: {e}", req.id))),
                }
            }
            // Nothing runs yet: the task ends as if the signal had killed it.
            (Status::Created, _) => {
                drop(state);
                self.exited(&task, 0, 128 + req.signal);
                Ok(api::Empty::default())
            }
            _ => Err(rpc_error(Code::NOT_FOUND, format!("container {}: process already finished", req.id))),
        }
    }

    fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> TtrpcResult<api::DeleteResponse> {
        Self::no_exec(&req.exec_id)?;
        let task = self.task(&req.id)?;
        if task.state().status() == Status::Running {
            return Err(rpc_error(Code::FAILED_PRECONDITION, format!("container {} is still running", req.id)));
        }
        task.cleanup();
        self.tasks.lock().unwrap().remove(&req.id);
        let state = task.state();
        let (status, at) = state.exit.as_ref().map_or((0, timestamp().unwrap_or_default()), |e| (e.status, e.at.clone()));
        let pid = state.pid.unwrap_or(0) as u32;
        self.publish(topics::TASK_DELETE_EVENT_TOPIC, Box::new(TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid,
            exit_status: status,
            exited_at: Some(at.clone()).into(),
            ..Default::default()
        }));
        Ok(api::DeleteResponse { pid, exit_status: status, exited_at: Some(at).into(), ..Default::default() })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let task = self.task(&req.id)?;
        let processes = task
            .running_pid()
            .map(|pid| containerd_shim::protos::api::ProcessInfo { pid: pid as u32, ..Default::default() })
            .into_iter()
            .collect();
        Ok(api::PidsResponse { processes, ..Default::default() })
    }

    fn stats(&self, _ctx: &TtrpcContext, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        let task = self.task(&req.id)?;
        let pid = task.running_pid().ok_or_else(|| rpc_error(Code::FAILED_PRECONDITION, format!("container {} is not running", req.id)))?;
        let cg = containerd_shim::cgroup::get_cgroup(pid as u32).map_err(|e| rpc_error(Code::INTERNAL, e))?;
        let stats = if cg.v2() {
            convert_to_any(Box::new(containerd_shim::cgroup::collect_metrics_v2(&cg).map_err(|e| rpc_error(Code::INTERNAL, e))?))
        } else {
            convert_to_any(Box::new(containerd_shim::cgroup::collect_metrics(&cg).map_err(|e| rpc_error(Code::INTERNAL, e))?))
        };
        Ok(api::StatsResponse { stats: Some(stats.map_err(|e| rpc_error(Code::INTERNAL, e))?).into(), ..Default::default() })
    }

    fn connect(&self, _ctx: &TtrpcContext, req: api::ConnectRequest) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.tasks.lock().unwrap().get(&req.id).and_then(|t| t.state().pid).unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task_pid as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        if self.tasks.lock().unwrap().is_empty() {
            self.exit.signal();
        }
        Ok(api::Empty::default())
    }
}
