use super::{Format, Global, ModeArg, ServiceCmd};
use overlay_bpf::{
    error::Result,
    state::model::{self, EndpointMode},
    state::ops::service::{self, CreateOpts, ServiceError, UpdateOpts},
};

pub async fn service(g: &Global, cmd: ServiceCmd) -> Result<i32> {
    let mut store = super::open_store(g).await?;
    let describe = store.describe();
    let shown = |state: &model::State, name: &str| -> Result<Option<service::ServiceRow>> {
        let c = model::resolve(&describe, state, overlay_bpf::host::capabilities())?;
        Ok(service::rows(state, &c).into_iter().find(|r| r.name == name))
    };
    match cmd {
        ServiceCmd::Create { name, network, vip, endpoint_mode, publish, backend } => {
            let endpoint_mode = match endpoint_mode {
                ModeArg::Vip => EndpointMode::Vip,
                ModeArg::Dnsrr => EndpointMode::Dnsrr,
            };
            let o = CreateOpts { name: name.clone(), network, vip, endpoint_mode, ports: publish, backends: backend };
            let (_, state) = store.edit(|s| Ok(service::create(s, &o)?)).await?;
            if let Some(r) = shown(&state, &name)? {
                let vip = r.vip.map(|v| v.to_string()).unwrap_or_else(|| "none (dnsrr)".into());
                println!("{name}: created on {}, vip {vip}, {} backends", r.network, r.endpoints.len());
            }
        }
        ServiceCmd::Update { name, backend_add, backend_rm, publish_add, publish_rm } => {
            let o = UpdateOpts { backend_add, backend_rm, publish_add, publish_rm };
            let (_, state) = store.edit(|s| Ok(service::update(s, &name, &o)?)).await?;
            if let Some(r) = shown(&state, &name)? {
                let names: Vec<&str> = r.endpoints.iter().map(|e| e.name.as_str()).collect();
                println!("{name}: updated; backends {}", names.join(", "));
            }
        }
        ServiceCmd::Rm { name } => {
            store.edit(|s| Ok(service::remove(s, &name)?)).await?;
            println!("{name}: removed");
        }
        ServiceCmd::Ls { output } => {
            let state = store.read().await?;
            let c = model::resolve(&describe, &state, overlay_bpf::host::capabilities())?;
            let rows = service::rows(&state, &c);
            match output {
                Format::Json => println!("{}", super::status::json(&rows)?),
                Format::Text => print!("{}", service::table(&rows)),
            }
        }
        ServiceCmd::Inspect { name } => {
            let state = store.read().await?;
            let r = shown(&state, &name)?.ok_or(ServiceError::NotFound(name))?;
            println!("{}", super::status::json(&r)?);
        }
    }
    Ok(0)
}
