//! Text or JSON output for every command.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

impl Output {
    /// Prints `json` as one line of JSON, or `text` for humans.
    pub fn print(self, json: &Value, text: impl FnOnce() -> String) {
        match self {
            Output::Json => println!("{json}"),
            Output::Text => println!("{}", text()),
        }
    }
}

/// Bytes as UTF-8 when they are, hex otherwise.
pub fn show_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => format!("0x{}", hex::encode(bytes)),
    }
}

pub fn format_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let millis = ms % 1000;
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(secs as u64)
            + std::time::Duration::from_millis(millis),
    )
    .to_string()
}
