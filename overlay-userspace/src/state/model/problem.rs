//! What can be wrong with a state file: each problem names its entry, the
//! rule it breaks (a [`Rule`], which tests and tools match on) and a message
//! with the fix where there is one. A rule broken by many entries is shown
//! grouped, with a count and the first few entries, not once per entry.

use std::fmt;

macro_rules! rules {
    ($($(#[doc = $doc:literal])+ $variant:ident = $name:literal;)+) => {
        /// The rule a problem breaks.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Rule {
            $($(#[doc = $doc])+ $variant,)+
        }

        /// Every rule, in table order.
        pub const RULES: &[Rule] = &[$(Rule::$variant,)+];

        impl Rule {
            /// A short stable name, as shown in grouped messages.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Rule::$variant => $name,)+
                }
            }

            /// What breaks it (the table's doc comment).
            pub const fn doc(self) -> &'static str {
                match self {
                    $(Rule::$variant => concat!($($doc),+),)+
                }
            }
        }
    };
}

rules! {
    /// The file cannot be read.
    Read = "read";
    /// Bigger than 16 MiB.
    TooLarge = "too-large";
    /// Not UTF-8.
    NotUtf8 = "not-utf8";
    /// Nothing in it.
    Empty = "empty";
    /// Not YAML of the state's shape: syntax, unknown keys, wrong types.
    Syntax = "syntax";
    /// `version` other than 1.
    Version = "version";
    /// `cluster.vxlan_port` 0.
    VxlanPort = "vxlan-port";
    /// A conntrack timeout of 0.
    ConntrackTimeout = "conntrack-timeout";
    /// `cluster.underlay_mtu` outside 576..65535.
    UnderlayMtu = "underlay-mtu";
    /// An entry without a name.
    EmptyName = "empty-name";
    /// Two entries of a list with one name.
    DuplicateName = "duplicate-name";
    /// A host address that cannot carry the data path.
    HostAddress = "host-address";
    /// Two hosts with one address.
    DuplicateHostAddress = "duplicate-host-address";
    /// Not a valid interface name.
    InterfaceName = "interface-name";
    /// More than one `ingress: true` network.
    SecondIngress = "second-ingress";
    /// A VNI outside 1..16777215.
    VniRange = "vni-range";
    /// Two networks with one VNI.
    DuplicateVni = "duplicate-vni";
    /// `encrypted: true` where the kernel cannot encrypt.
    Encryption = "encryption";
    /// A macvlan network without `parent`, a macvlan setting on an overlay
    /// network, or an overlay-only setting (vni, encrypted, ingress) on a
    /// macvlan network.
    Macvlan = "macvlan";
    /// A service on a macvlan network (no VIPs, no routing mesh there).
    MacvlanService = "macvlan-service";
    /// `cluster.wireguard_port` 0 or the VXLAN port.
    WireguardPort = "wireguard-port";
    /// A host's `wireguard_key` that is not a base64 WireGuard public key.
    WireguardKey = "wireguard-key";
    /// A network MTU under 68.
    MtuTooSmall = "mtu-too-small";
    /// A network MTU that VXLAN pushes past the underlay's.
    MtuTooLarge = "mtu-too-large";
    /// A network without subnets.
    NoSubnets = "no-subnets";
    /// A subnet or ip_range with host bits set.
    HostBits = "host-bits";
    /// A subnet smaller than a /30.
    SubnetTooSmall = "subnet-too-small";
    /// A gateway outside its subnet.
    GatewayOutside = "gateway-outside";
    /// An ip_range outside its subnet.
    IpRangeOutside = "ip-range-outside";
    /// An aux address outside its subnet.
    AuxOutside = "aux-outside";
    /// A subnet holding a host's underlay address.
    SubnetHoldsHost = "subnet-holds-host";
    /// Two subnets that overlap.
    SubnetOverlap = "subnet-overlap";
    /// A reference to a network that does not exist.
    UnknownNetwork = "unknown-network";
    /// A reference to a host that does not exist.
    UnknownHost = "unknown-host";
    /// A backend that matches no endpoint or alias of its service's network
    /// (a warning: the service has no backend from it for now).
    UnknownBackend = "unknown-backend";
    /// An alias that is not a name.
    Alias = "alias";
    /// A backend that is an endpoint's name on another network than its
    /// service's.
    BackendNetwork = "backend-network";
    /// An endpoint on a non-attachable network that backs no service.
    NotAttachable = "not-attachable";
    /// A `netns` that is neither a name nor an absolute path.
    Netns = "netns";
    /// A MAC that is not unicast.
    Mac = "mac";
    /// Two endpoints with one MAC.
    DuplicateMac = "duplicate-mac";
    /// One interface name twice in a network namespace.
    InterfaceTaken = "interface-taken";
    /// A `vip` on a dnsrr service.
    DnsrrVip = "dnsrr-vip";
    /// An ingress-published port on a dnsrr service.
    DnsrrIngress = "dnsrr-ingress";
    /// Port 0.
    PortZero = "port-zero";
    /// A (protocol, port) published twice.
    PublishedTwice = "published-twice";
    /// The VXLAN port published as a UDP service port.
    VxlanPortPublished = "vxlan-port-published";
    /// No free address left for an endpoint or a VIP.
    PoolExhausted = "pool-exhausted";
    /// An address inside another network's subnet.
    AddressInOtherNetwork = "address-in-other-network";
    /// An address outside its network's subnets.
    AddressOutside = "address-outside";
    /// A subnet's network or broadcast address given to an endpoint or VIP.
    NetworkOrBroadcast = "network-or-broadcast";
    /// An address already used.
    DuplicateAddress = "duplicate-address";
}

/// docs/state-file.md's table of rules, from the one table above.
pub fn rules_markdown() -> String {
    let mut s = String::from("| rule | what breaks it |\n|---|---|\n");
    for r in RULES {
        let doc = r.doc().split_whitespace().collect::<Vec<_>>().join(" ");
        s += &format!("| `{}` | {} |\n", r.name(), doc);
    }
    s
}

/// One broken rule: where (`entry`), which ([`Rule`]) and what (`message`,
/// with the fix where one exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub entry: String,
    pub rule: Rule,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.entry, self.message)
    }
}

/// Everything wrong with one state file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct StateError {
    pub file: String,
    pub problems: Vec<Problem>,
}

/// Entries listed by name in a grouped line.
const NAMED: usize = 3;
/// Distinct messages of one rule shown before the rest is counted.
const SHOWN: usize = 5;

impl fmt::Display for StateError {
    /// A line per problem, except that problems with the same rule and
    /// message make one line naming the first entries and counting the rest,
    /// and a rule with more than a few distinct messages shows the first and
    /// counts the others: a mistake repeated on 60,000 endpoints is one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines: Vec<String> = Vec::new();
        for (rule, problems) in self.by_rule() {
            let mut messages: Vec<(&str, Vec<&str>)> = Vec::new();
            for p in problems {
                match messages.iter_mut().find(|(m, _)| *m == p.message) {
                    Some((_, entries)) => entries.push(&p.entry),
                    None => messages.push((&p.message, vec![&p.entry])),
                }
            }
            let distinct = messages.len();
            for (message, entries) in messages.iter().take(SHOWN) {
                let mut who = entries.iter().take(NAMED).copied().collect::<Vec<_>>().join(", ");
                if entries.len() > NAMED {
                    who += &format!(" and {} more", entries.len() - NAMED);
                }
                lines.push(format!("{}: {who}: {message}", self.file));
            }
            if distinct > SHOWN {
                let rest: usize = messages[SHOWN..].iter().map(|(_, e)| e.len()).sum();
                lines.push(format!("{}: ... and {rest} more problems of the same kind ({})", self.file, rule.name()));
            }
        }
        write!(f, "{}", lines.join("\n"))
    }
}

impl StateError {
    pub(crate) fn one(file: &str, rule: Rule, entry: impl Into<String>, message: impl Into<String>) -> Self {
        StateError {
            file: file.to_string(),
            problems: vec![Problem { entry: entry.into(), rule, message: message.into() }],
        }
    }

    /// The problems by rule, rules in the order they first appear.
    pub fn by_rule(&self) -> Vec<(Rule, Vec<&Problem>)> {
        let mut out: Vec<(Rule, Vec<&Problem>)> = Vec::new();
        for p in &self.problems {
            match out.iter_mut().find(|(r, _)| *r == p.rule) {
                Some((_, v)) => v.push(p),
                None => out.push((p.rule, vec![p])),
            }
        }
        out
    }

    /// Whether some problem breaks `rule` at an entry containing `entry`.
    pub fn breaks(&self, rule: Rule, entry: &str) -> bool {
        self.problems.iter().any(|p| p.rule == rule && p.entry.contains(entry))
    }
}
