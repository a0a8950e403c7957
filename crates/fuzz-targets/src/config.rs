//! The config target: text as an operator writes it (TOML files, `--peers` and `--labels`
//! flags), through the master's and the agent's parsers and checks.
//!
//! Parsing and checking may fail, naming the key; nothing may panic. A configuration that
//! parses must print (`toml::to_string`) and parse back to the same configuration.

use taurus_agent::AgentConfig;
use taurus_master::MasterConfig;

/// Fuzz target: never panics on any input.
pub fn fuzz_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = MasterConfig::from_toml(&text) {
        let _ = c.validate();
        let printed = toml::to_string(&c).expect("a master config prints");
        let back = MasterConfig::from_toml(&printed)
            .unwrap_or_else(|e| panic!("a printed master config parses: {e}\n{printed}"));
        assert_eq!(back, c, "master config round trip\n{printed}");
    }
    if let Ok(c) = AgentConfig::from_toml(&text) {
        let _ = c.resolve();
        let printed = toml::to_string(&c).expect("an agent config prints");
        let back = AgentConfig::from_toml(&printed)
            .unwrap_or_else(|e| panic!("a printed agent config parses: {e}\n{printed}"));
        assert_eq!(back, c, "agent config round trip\n{printed}");
    }
    let _ = taurus_master::config::parse_peers(&text);
    let _ = taurus_agent::parse_labels(&text);
}
