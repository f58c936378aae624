//! Exit codes, and an error as one line: what every layer's errors share.
//! 0 success, 1 a user error (bad file, unknown host, bad flag, a state
//! bigger than the maps), 2 a system error (kernel refused, missing
//! privilege).

pub const USER: i32 = 1;
pub const SYSTEM: i32 = 2;

/// An error and its causes, as one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s += &format!(": {text}");
        }
        cause = c.source();
    }
    s
}
