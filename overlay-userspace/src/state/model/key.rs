//! A WireGuard key as the state holds it (a host's `wireguard_key`).

use std::fmt;

use base64::prelude::*;

/// A WireGuard public (or private) key: 32 bytes, base64 as wg(8) prints them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key(pub [u8; 32]);

impl Key {
    pub fn parse(s: &str) -> Result<Key, String> {
        let bytes = BASE64_STANDARD.decode(s.trim()).map_err(|e| format!("{s:?} is not base64 ({e})"))?;
        let len = bytes.len();
        let key: [u8; 32] =
            bytes.try_into().map_err(|_| format!("{s:?} holds {len} bytes; a WireGuard key holds 32"))?;
        Ok(Key(key))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64_STANDARD.encode(self.0))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}
