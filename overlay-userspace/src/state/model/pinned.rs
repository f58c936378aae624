//! A state with every allocation written out: what the store keeps, and
//! what `store export` prints. Resolving it gives the same cluster as the
//! state it came from, wherever and whenever it is resolved.

use super::*;

/// `state` with the VNIs, gateways, endpoint addresses and MACs, and service
/// VIPs that `cluster` (its resolution) allocated.
pub fn pinned(state: &State, cluster: &Cluster) -> State {
    let mut s = state.clone();
    for n in &mut s.networks {
        let Some(r) = cluster.networks.iter().find(|r| r.name == n.name) else { continue };
        // A macvlan network has no VNI to pin.
        n.vni = r.vni();
        for sub in &mut n.subnets {
            if let Some(rs) = r.subnets.iter().find(|rs| rs.subnet == sub.subnet) {
                sub.gateway = Some(rs.gateway);
            }
        }
    }
    let resolved: std::collections::HashMap<(&str, &str), &Endpoint> =
        cluster.endpoints.iter().map(|r| ((cluster.networks[r.network].name.as_str(), r.name.as_str()), r)).collect();
    for e in &mut s.endpoints {
        let Some(r) = resolved.get(&(e.network.as_str(), e.name.as_str())) else { continue };
        e.ip = Some(r.ip);
        e.mac = Some(r.mac);
    }
    for svc in &mut s.services {
        let Some(r) = cluster.services.iter().find(|r| r.name == svc.name) else { continue };
        svc.vip = r.vip;
    }
    s
}

/// Removes the endpoints `gone` picks, and their names from the backends of
/// their networks' services (an alias stays: it stands for whoever carries
/// it, and a service whose alias no one carries any more has no backend
/// from it, which is a warning, not an error). Every front end removes
/// endpoints this way, so removing one never fails because of a service.
/// Returns the (network, name) pairs removed.
pub fn remove_endpoints(state: &mut State, gone: impl Fn(&EndpointSpec) -> bool) -> Vec<(String, String)> {
    let (removed, kept): (Vec<EndpointSpec>, Vec<EndpointSpec>) =
        std::mem::take(&mut state.endpoints).into_iter().partition(|e| gone(e));
    state.endpoints = kept;
    let removed: Vec<(String, String)> = removed.into_iter().map(|e| (e.network, e.name)).collect();
    for s in &mut state.services {
        let network = s.network.clone();
        s.backends.retain(|b| !removed.iter().any(|(n, e)| *n == network && e == b));
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/cluster.yaml"));

    #[test]
    fn pinning_changes_no_allocation_and_writes_every_one_out() {
        let state = parse_state("example", STATE.as_bytes()).unwrap();
        let cluster = resolve("example", &state, Capabilities::default()).unwrap();
        let p = pinned(&state, &cluster);
        assert_eq!(resolve("pinned", &p, Capabilities::default()).unwrap(), cluster);
        // Every overlay's VNI (a macvlan network has none).
        assert!(p.networks.iter().all(|n| n.vni.is_some() == (n.driver == Driver::Overlay)));
        assert!(p.networks.iter().all(|n| n.subnets.iter().all(|s| s.gateway.is_some())));
        assert!(p.endpoints.iter().all(|e| e.ip.is_some() && e.mac.is_some()));
        assert!(p.services.iter().filter(|s| s.endpoint_mode == EndpointMode::Vip).all(|s| s.vip.is_some()));
        // Pinning what is pinned changes nothing.
        assert_eq!(pinned(&p, &cluster), p);
    }

    #[test]
    fn a_pinned_macvlan_network_has_no_vni_and_resolves_alike() {
        let y = "version: 1\nhosts: [{name: n1, address: 192.168.246.2}]\nnetworks:\n  - {name: lan, driver: macvlan, \
                 parent: eth0, subnets: [{subnet: 192.168.246.0/24}]}\nendpoints: [{name: m, host: n1, network: lan, \
                 netns: m}]\n";
        let state = parse_state("t", y.as_bytes()).unwrap();
        let cluster = resolve("t", &state, Capabilities::default()).unwrap();
        let p = pinned(&state, &cluster);
        assert_eq!(p.networks[0].vni, None);
        assert_eq!(p.networks[0].subnets[0].gateway, Some("192.168.246.1".parse().unwrap()));
        assert_eq!(resolve("pinned", &p, Capabilities::default()).unwrap(), cluster);
    }
}
