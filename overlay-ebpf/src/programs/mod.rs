pub mod baseline;
pub mod mesh;
pub mod tc_endpoint;
pub mod xdp_underlay;
