use super::{Global, NetworkCmd};
use overlay_bpf::{
    model::{self, Capabilities},
    network_cmd::NetworkError,
    network_cmd::{self, CreateOpts},
};

pub fn network(g: &Global, cmd: NetworkCmd) -> overlay_bpf::error::Result<i32> {
    match cmd {
        NetworkCmd::Create(a) => {
            if a.driver != "overlay" {
                return Err(NetworkError::Driver(a.driver).into());
            }
            let mut state = network_cmd::read_for_edit(&g.state)?;
            network_cmd::create(
                &mut state,
                &CreateOpts {
                    name: a.name.clone(),
                    subnets: a.subnet,
                    gateways: a.gateway,
                    ip_ranges: a.ip_range,
                    aux_addresses: a.aux_address,
                    opts: a.opt,
                    attachable: a.attachable,
                    internal: a.internal,
                    ingress: a.ingress,
                    vni: a.vni,
                },
            )?;
            network_cmd::write_state(&g.state, &state)?;
            let c = model::resolve(&g.state.display().to_string(), &state, Capabilities::default())?;
            let n = &c.networks[c.network_index(&a.name).expect("just created")];
            println!("{}", network_cmd::network_id(&n.name, n.vni));
        }
        NetworkCmd::Ls { quiet } => {
            let c = model::load(&g.state, Capabilities::default())?;
            print!("{}", network_cmd::ls(&c, quiet));
        }
        NetworkCmd::Inspect { names } => {
            let c = model::load(&g.state, Capabilities::default())?;
            let mut out = Vec::new();
            for name in &names {
                let i = c.network_index(name).ok_or_else(|| NetworkError::NotFound(name.clone()))?;
                out.push(network_cmd::inspect(&c, i));
            }
            println!("{}", super::status::json(&out)?);
        }
        NetworkCmd::Rm { names } => {
            let mut state = model::read_state(&g.state)?;
            network_cmd::remove(&mut state, &names)?;
            network_cmd::write_state(&g.state, &state)?;
            for n in names {
                println!("{n}");
            }
        }
    }
    Ok(0)
}
