use overlay_bpf::state::model::NetworkKind;

use super::{Format, Global};

pub async fn validate(g: &Global, output: Format) -> overlay_bpf::error::Result<i32> {
    let mut store = super::open_store(g).await?;
    let c = store.load().await?;
    // Worth saying, but the state is valid: exit 0.
    for w in &c.warnings {
        eprintln!("warning: {}: {w}", store.describe());
    }
    if output == Format::Json {
        let nets: Vec<_> = c
            .networks
            .iter()
            .map(|n| {
                let mut v = serde_json::json!({"name": n.name, "vni": n.vni().unwrap_or(0), "mtu": n.mtu().unwrap_or(0), "subnets": n.subnets.iter().map(|s| serde_json::json!({"subnet": s.subnet.to_string(), "gateway": s.gateway.to_string()})).collect::<Vec<_>>()});
                if let Some(m) = n.macvlan() {
                    v["driver"] = "macvlan".into();
                    v["parent"] = m.parent.clone().into();
                    v["macvlan_mode"] = m.mode.name().into();
                }
                v
            })
            .collect();
        let eps: Vec<_> = c
            .endpoints
            .iter()
            .map(|e| serde_json::json!({"name": e.name, "host": c.hosts[e.host].name, "network": c.networks[e.network].name, "ip": e.ip.to_string(), "prefix_len": e.prefix_len, "mac": e.mac.to_string(), "netns": e.netns, "ifname": e.ifname}))
            .collect();
        let svcs: Vec<_> = c
            .services
            .iter()
            .map(|s| serde_json::json!({"name": s.name, "network": c.networks[s.network].name, "vip": s.vip.map(|v| v.to_string())}))
            .collect();
        println!(
            "{}",
            super::status::json(&serde_json::json!({"networks": nets, "endpoints": eps, "services": svcs}))?
        );
        return Ok(0);
    }
    println!(
        "{}: ok: {} hosts, {} networks, {} endpoints, {} services",
        store.describe(),
        c.hosts.len(),
        c.networks.len(),
        c.endpoints.len(),
        c.services.len()
    );
    for n in &c.networks {
        let subs: Vec<String> = n.subnets.iter().map(|s| format!("{} gw {}", s.subnet, s.gateway)).collect();
        match &n.kind {
            NetworkKind::Macvlan(m) => {
                let mtu = match m.mtu {
                    Some(mtu) => format!("mtu {mtu}"),
                    None => format!("mtu of {}", m.parent),
                };
                let on = format!("macvlan {} {}", m.parent, m.mode.name());
                println!("  network  {:<16} {on:<22} {mtu}  {}", n.name, subs.join(", "));
            }
            NetworkKind::Overlay(o) => {
                println!("  network  {:<16} vni {:<8} mtu {:<5} {}", n.name, o.vni, o.mtu, subs.join(", "))
            }
        }
    }
    for e in &c.endpoints {
        println!(
            "  endpoint {:<16} {:<8} {:<16} {:<18} {} {}:{}",
            e.name,
            c.hosts[e.host].name,
            c.networks[e.network].name,
            format!("{}/{}", e.ip, e.prefix_len),
            e.mac,
            e.netns.display(),
            e.ifname
        );
    }
    for s in &c.services {
        println!(
            "  service  {:<16} {:<8} vip {}",
            s.name,
            c.networks[s.network].name,
            s.vip.map(|v| v.to_string()).unwrap_or_else(|| "- (dnsrr)".into())
        );
    }
    Ok(0)
}
