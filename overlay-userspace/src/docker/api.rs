//! The messages of Docker's remote network driver and IPAM driver APIs
//! (libnetwork's `remote.md` and `ipam.md`): JSON bodies of POSTs to
//! `/NetworkDriver.*` and `/IpamDriver.*`, field names as Docker spells them.
//! Every response may carry an error, which Docker shows the user: `Err` in
//! the network driver's, `Error` in IPAM's.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The address space our IPAM answers for; a network whose pools come from
/// another (Docker's default IPAM) is refused at `CreateNetwork`.
pub const ADDRESS_SPACE: &str = "overlay-bpf";
/// The option Docker sets on the gateway's `RequestAddress`.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
pub const GATEWAY_TYPE: &str = "com.docker.network.gateway";
/// `docker network create -o` options arrive under this key.
pub const GENERIC_OPTIONS: &str = "com.docker.network.generic";
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// `docker run -p` arrives in `ProgramExternalConnectivity` under this key.
pub const PORT_MAP: &str = "com.docker.network.portmap";

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Activate {
    pub implements: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Capabilities {
    pub scope: &'static str,
    pub connectivity_scope: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamCapabilities {
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    pub requires_request_replay: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressSpaces {
    pub local_default_address_space: &'static str,
    pub global_default_address_space: &'static str,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPool {
    pub address_space: String,
    pub pool: String,
    pub sub_pool: String,
    pub options: Option<HashMap<String, String>>,
    #[serde(rename = "V6")]
    pub v6: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoolResponse {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub pool: String,
    pub data: HashMap<String, String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct PoolId {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
    pub options: Option<HashMap<String, String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressResponse {
    /// CIDR: `10.0.9.2/24`.
    pub address: String,
    pub data: HashMap<String, String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleaseAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    pub pool: String,
    pub gateway: String,
    pub aux_addresses: Option<HashMap<String, String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    pub options: Option<HashMap<String, serde_json::Value>>,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

impl CreateNetwork {
    /// A `-o name=value` option of `docker network create`.
    pub fn generic(&self, name: &str) -> Option<String> {
        let o = self.options.as_ref()?.get(GENERIC_OPTIONS)?.get(name)?;
        Some(o.as_str().map(str::to_string).unwrap_or_else(|| o.to_string()))
    }

    /// Every `-o name=value` option of `docker network create`.
    pub fn generics(&self) -> Vec<(String, String)> {
        let Some(o) = self.options.as_ref().and_then(|o| o.get(GENERIC_OPTIONS)?.as_object().cloned()) else {
            return Vec::new();
        };
        o.into_iter().map(|(k, v)| (k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))).collect()
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkId {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

#[derive(Debug, Deserialize, Serialize, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct Interface {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(rename = "AddressIPv6", skip_serializing_if = "String::is_empty")]
    pub address_ipv6: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub interface: Option<Interface>,
    pub options: Option<HashMap<String, serde_json::Value>>,
}

#[derive(Debug, Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointResponse {
    /// Only what Docker did not give (the MAC): Docker refuses a value back
    /// for a field it set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<Interface>,
}

/// `EndpointOperInfo`, `DeleteEndpoint`, `Leave`, `Revoke...`: the endpoint.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub options: Option<HashMap<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Join {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub sandbox_key: String,
    pub options: Option<HashMap<String, serde_json::Value>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    pub interface_name: InterfaceName,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// No docker_gwbridge: the overlay's gateway is the way out.
    pub disable_gateway_service: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OperInfo {
    pub value: HashMap<String, String>,
}

/// One `-p` mapping, as libnetwork's `types.PortBinding` serialises.
#[derive(Debug, Deserialize, Default, Clone, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    /// IP protocol number: 6 TCP, 17 UDP.
    pub proto: u8,
    pub port: u16,
    pub host_port: u16,
    pub host_port_end: u16,
}

/// The `-p` mappings of a `ProgramExternalConnectivity` call.
pub fn port_bindings(options: &Option<HashMap<String, serde_json::Value>>) -> Result<Vec<PortBinding>, String> {
    let Some(v) = options.as_ref().and_then(|o| o.get(PORT_MAP)) else { return Ok(Vec::new()) };
    if v.is_null() {
        return Ok(Vec::new());
    }
    serde_json::from_value(v.clone()).map_err(|e| format!("{PORT_MAP}: {e}"))
}

/// A response with nothing but a possible error.
#[derive(Debug, Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Empty {}

/// The error response of `method`: each API names the field its own way
/// (`Err` for the network driver, `Error` for IPAM), and Docker reads only
/// its own.
pub fn error_response(method: &str, msg: String) -> serde_json::Value {
    match method.starts_with("IpamDriver.") {
        true => serde_json::json!({ "Error": msg }),
        false => serde_json::json!({ "Err": msg }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_as_docker_20_10_sends_them() {
        let c: CreateNetwork = serde_json::from_str(
            r#"{"NetworkID":"9f2","Options":{"com.docker.network.enable_ipv6":false,
                "com.docker.network.generic":{"com.docker.network.driver.mtu":"1400","encrypted":""}},
                "IPv4Data":[{"AddressSpace":"overlay-bpf","Gateway":"10.0.9.1/24","Pool":"10.0.9.0/24"}],
                "IPv6Data":[]}"#,
        )
        .unwrap();
        assert_eq!(c.generic(MTU_OPTION).as_deref(), Some("1400"));
        assert_eq!(c.generic("encrypted").as_deref(), Some(""));
        assert_eq!(c.ipv4_data.unwrap()[0].pool, "10.0.9.0/24");
        let e: CreateEndpoint = serde_json::from_str(
            r#"{"NetworkID":"9f2","EndpointID":"ab1","Interface":{"Address":"10.0.9.2/24","MacAddress":""},"Options":{}}"#,
        )
        .unwrap();
        assert_eq!(e.interface.unwrap().address, "10.0.9.2/24");
        let p: EndpointRef = serde_json::from_str(
            r#"{"NetworkID":"9f2","EndpointID":"ab1","Options":{"com.docker.network.portmap":
                [{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}],
                "com.docker.network.endpoint.exposedports":[{"Proto":6,"Port":80}]}}"#,
        )
        .unwrap();
        let b = port_bindings(&p.options).unwrap();
        assert_eq!(b, vec![PortBinding { proto: 6, port: 80, host_port: 8080, host_port_end: 8080 }]);
        // Docker sends null for no mappings.
        let none: EndpointRef = serde_json::from_str(r#"{"Options":{"com.docker.network.portmap":null}}"#).unwrap();
        assert!(port_bindings(&none.options).unwrap().is_empty());
        let r: RequestAddress = serde_json::from_str(
            r#"{"PoolID":"overlay-bpf/10.0.9.0/24","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#,
        )
        .unwrap();
        assert_eq!(r.options.unwrap()[REQUEST_ADDRESS_TYPE], GATEWAY_TYPE);
    }

    #[test]
    fn responses_are_spelled_as_docker_reads_them() {
        let j = serde_json::to_value(JoinResponse {
            interface_name: InterfaceName { src_name: "obc1".into(), dst_prefix: "eth".into() },
            gateway: "10.0.9.1".into(),
            disable_gateway_service: true,
        })
        .unwrap();
        assert_eq!(
            j,
            serde_json::json!({"InterfaceName": {"SrcName": "obc1", "DstPrefix": "eth"}, "Gateway": "10.0.9.1",
                "DisableGatewayService": true})
        );
        let c = serde_json::to_value(Capabilities { scope: "local", connectivity_scope: "global" }).unwrap();
        assert_eq!(c, serde_json::json!({"Scope": "local", "ConnectivityScope": "global"}));
        let i = serde_json::to_value(IpamCapabilities { requires_mac_address: false, requires_request_replay: false })
            .unwrap();
        assert_eq!(i, serde_json::json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}));
        let p = serde_json::to_value(PoolResponse {
            pool_id: "overlay-bpf/10.0.9.0/24".into(),
            pool: "10.0.9.0/24".into(),
            data: HashMap::new(),
        })
        .unwrap();
        assert_eq!(p, serde_json::json!({"PoolID": "overlay-bpf/10.0.9.0/24", "Pool": "10.0.9.0/24", "Data": {}}));
        let e = serde_json::to_value(CreateEndpointResponse {
            interface: Some(Interface { mac_address: "02:42:0a:00:09:02".into(), ..Default::default() }),
        })
        .unwrap();
        assert_eq!(e, serde_json::json!({"Interface": {"MacAddress": "02:42:0a:00:09:02"}}));
        assert_eq!(error_response("NetworkDriver.Join", "x".into()), serde_json::json!({"Err": "x"}));
        assert_eq!(error_response("IpamDriver.RequestPool", "x".into()), serde_json::json!({"Error": "x"}));
    }
}
