//! The CNI protocol's JSON (spec 1.0.0, with 1.1.0's STATUS and GC): the
//! network configuration on stdin, the result and the error object on stdout.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The versions whose configuration and result this plugin speaks. The
/// result of 0.3.x and 0.4.0 differs from 1.x only in `ips[].version`.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version this plugin answers in when the configuration names none.
pub const LATEST: &str = "1.1.0";

/// Error codes, as the CNI spec assigns them (1-99), and ours (100+).
pub mod code {
    /// The configuration's cniVersion is not one this plugin speaks.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A field of the configuration this plugin does not support.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// The container (its netns) is unknown or gone.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// A CNI_* variable is missing or wrong.
    pub const INVALID_ENV: u32 = 4;
    /// Creating or changing an interface, a map, a file failed.
    pub const IO_FAILURE: u32 = 5;
    /// stdin is not the JSON of a network configuration.
    pub const DECODE: u32 = 6;
    /// The configuration is JSON but wrong: no `network`, an unknown one.
    pub const INVALID_CONFIG: u32 = 7;
    /// The store did not answer, or kept conflicting: try again.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin cannot serve ADD now (its store does not answer).
    pub const NOT_AVAILABLE: u32 = 50;
    /// CHECK: the attachment is not what ADD made (interface, address,
    /// route or registration changed or gone).
    pub const DRIFTED: u32 = 100;
    /// ADD: the store refused the endpoint (an address taken, the network full).
    pub const REFUSED: u32 = 101;
}

/// The network configuration, one plugin's entry of the conflist as the
/// runtime hands it over (with `name` and `cniVersion` copied in).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// The conflist's name (the runtime's network name).
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The store's network the containers join.
    pub network: Option<String>,
    /// The store (`etcd://...` or a state file); default as the CLI's.
    pub store: Option<String>,
    pub etcd_cacert: Option<PathBuf>,
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
    /// Which host of the state this is; default as the CLI's (`--host`).
    pub host: Option<String>,
    /// CHECK: what ADD returned.
    #[serde(rename = "prevResult")]
    pub prev_result: Option<serde_json::Value>,
    /// GC: the attachments the runtime still has.
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// Capability arguments (`"capabilities": {"ips": true}` in the conflist).
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    /// Static addresses the runtime asks for (`podman run --ip`).
    #[serde(default)]
    pub ips: Vec<String>,
    /// A static MAC (`podman run --mac-address`).
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// ADD's result.
#[derive(Debug, Clone, Serialize)]
pub struct AddResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Debug, Clone, Serialize)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IpConfig {
    /// "4", in results of 0.3.x and 0.4.0 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    pub interface: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub dst: String,
    pub gw: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Dns {
    /// The network's gateway, where the agent's resolver answers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
}

/// VERSION's answer.
#[derive(Debug, Serialize)]
pub struct VersionResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: &'static [&'static str],
}

/// The error object on stdout.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// One key of `CNI_ARGS` (`K1=V1;K2=V2`).
pub fn cni_arg<'a>(args: &'a str, key: &str) -> Option<&'a str> {
    args.split(';').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_are_split_on_semicolons() {
        let a = "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-1;IP=10.0.0.5";
        assert_eq!(cni_arg(a, "K8S_POD_NAME"), Some("web-1"));
        assert_eq!(cni_arg(a, "K8S_POD_NAMESPACE"), Some("prod"));
        assert_eq!(cni_arg(a, "IP"), Some("10.0.0.5"));
        assert_eq!(cni_arg(a, "MAC"), None);
        assert_eq!(cni_arg("", "IP"), None);
    }

    #[test]
    fn a_conflist_entry_reads_with_unknown_fields_and_capability_arguments() {
        let c: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","name":"app","type":"overlay-bpf","network":"app",
                "store":"etcd://10.0.0.1:2379","capabilities":{"ips":true},
                "runtimeConfig":{"ips":["10.0.9.7/24"]},"something":{"else":1}}"#,
        )
        .unwrap();
        assert_eq!(c.network.as_deref(), Some("app"));
        assert_eq!(c.runtime_config.ips, ["10.0.9.7/24"]);
        let g: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.1.0","name":"app","type":"overlay-bpf","network":"app",
                "cni.dev/valid-attachments":[{"containerID":"abc","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(g.valid_attachments.unwrap(), [Attachment { container_id: "abc".into(), ifname: "eth0".into() }]);
    }

    #[test]
    fn results_carry_the_ip_version_only_before_1_0() {
        let ip = IpConfig { version: Some("4"), address: "10.0.0.2/24".into(), gateway: None, interface: 1 };
        assert_eq!(serde_json::to_value(&ip).unwrap()["version"], "4");
        let ip = IpConfig { version: None, ..ip };
        assert!(serde_json::to_value(&ip).unwrap().get("version").is_none());
    }
}
