//! What the runtime plugins (Docker's and CNI) share.

use crate::state::model::{EndpointSpec, State};

/// The name of a container's endpoint on `network`: `wanted` when no other
/// endpoint of the network has it, else `<wanted>.<host>` (as Docker names a
/// task). `is_self` tells the endpoint being named, which
/// may already hold either name. None when both are taken.
pub fn container_name(
    state: &State,
    network: &str,
    wanted: &str,
    host: &str,
    is_self: impl Fn(&EndpointSpec) -> bool,
) -> Option<String> {
    let taken = |n: &str| state.endpoints.iter().any(|e| e.network == network && e.name == n && !is_self(e));
    [wanted.to_string(), format!("{wanted}.{host}")].into_iter().find(|n| !taken(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(name: &str, network: &str) -> EndpointSpec {
        serde_yaml::from_str(&format!("{{name: {name}, host: h1, network: {network}, netns: x}}")).unwrap()
    }

    #[test]
    fn a_taken_name_gets_the_host_and_two_taken_names_none() {
        let mut s = State::empty();
        assert_eq!(container_name(&s, "app", "web", "h2", |_| false).as_deref(), Some("web"));
        s.endpoints.push(ep("web", "other"));
        assert_eq!(container_name(&s, "app", "web", "h2", |_| false).as_deref(), Some("web"), "another network's");
        s.endpoints.push(ep("web", "app"));
        assert_eq!(container_name(&s, "app", "web", "h2", |_| false).as_deref(), Some("web.h2"));
        assert_eq!(container_name(&s, "app", "web", "h2", |e| e.name == "web").as_deref(), Some("web"), "its own");
        s.endpoints.push(ep("web.h2", "app"));
        assert_eq!(container_name(&s, "app", "web", "h2", |_| false), None);
    }
}
