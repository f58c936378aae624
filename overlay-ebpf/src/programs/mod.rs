pub mod baseline;
pub mod tc_endpoint;
pub mod tc_underlay;
pub mod tc_wireguard;
pub mod xdp_underlay;
