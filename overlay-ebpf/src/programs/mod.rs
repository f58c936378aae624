pub mod baseline;
pub mod tc_endpoint;
pub mod xdp_underlay;
