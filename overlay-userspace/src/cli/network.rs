use super::{Global, NetworkCmd};
use overlay_bpf::{
    state::model::{self},
    state::ops::network::NetworkError,
    state::ops::network::{self, CreateOpts},
};

pub async fn network(g: &Global, cmd: NetworkCmd) -> overlay_bpf::error::Result<i32> {
    let mut store = super::open_store(g).await?;
    match cmd {
        NetworkCmd::Create(a) => {
            let driver = match a.driver.as_str() {
                "overlay" => model::Driver::Overlay,
                "macvlan" => model::Driver::Macvlan,
                _ => return Err(NetworkError::Driver(a.driver).into()),
            };
            let opts = CreateOpts {
                name: a.name.clone(),
                driver,
                subnets: a.subnet,
                gateways: a.gateway,
                ip_ranges: a.ip_range,
                aux_addresses: a.aux_address,
                opts: a.opt,
                attachable: a.attachable,
                internal: a.internal,
                ingress: a.ingress,
                vni: a.vni,
            };
            let (_, state) = store.edit(|state| Ok(network::create(state, &opts)?)).await?;
            let c = model::resolve(&store.describe(), &state, overlay_bpf::host::capabilities())?;
            let n = &c.networks[c.network_index(&a.name).expect("just created")];
            println!("{}", network::network_id(&n.name, n.vni()));
        }
        NetworkCmd::Ls { quiet } => {
            let c = store.load().await?;
            print!("{}", network::ls(&c, quiet));
        }
        NetworkCmd::Inspect { names } => {
            let c = store.load().await?;
            let mut out = Vec::new();
            for name in &names {
                let i = c.network_index(name).ok_or_else(|| NetworkError::NotFound(name.clone()))?;
                out.push(network::inspect(&c, i));
            }
            println!("{}", super::status::json(&out)?);
        }
        NetworkCmd::Rm { names } => {
            store.edit(|state| Ok(network::remove(state, &names)?)).await?;
            for n in names {
                println!("{n}");
            }
        }
    }
    Ok(0)
}
