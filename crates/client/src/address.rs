//! Master addresses: `host:port`, `http://host:port` or `https://host:port`, normalised to a
//! URI tonic accepts.

/// Normalises a master address to `http://host:port`, or says what is wrong with it.
///
/// Accepts `host:port` and `http://host:port` (a trailing `/` is ignored). IPv6 hosts need
/// brackets (`[::1]:7101`). `https://` needs TLS settings: see [`normalize_address_for`].
pub fn normalize_address(addr: &str) -> Result<String, String> {
    normalize_address_for(addr, false)
}

/// Normalises a master address for a client with (`tls`) or without TLS: `https://host:port`
/// or `http://host:port`. With TLS, `host:port`, `http://` and `https://` forms are all dialled
/// over TLS; without, `https://` is an error (there are no certificates to use).
pub fn normalize_address_for(addr: &str, tls: bool) -> Result<String, String> {
    let s = addr.trim();
    if s.is_empty() {
        return Err("empty address".into());
    }
    if s.starts_with("https://") && !tls {
        return Err(
            "https:// needs TLS settings (--ca, --cert and --key); use HOST:PORT or http://HOST:PORT".into(),
        );
    }
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    if rest.contains("://") {
        return Err("unsupported scheme; use HOST:PORT or http://HOST:PORT".into());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err("unexpected path; use HOST:PORT".into());
    }
    let (host, port) = rest.rsplit_once(':').ok_or("missing port; use HOST:PORT")?;
    if host.is_empty() {
        return Err("missing host; use HOST:PORT".into());
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("IPv6 hosts need brackets, e.g. [::1]:7101".into());
    }
    if host.chars().any(char::is_whitespace) {
        return Err("host contains whitespace".into());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("port {port:?} is not a number from 1 to 65535")),
        Ok(_) => {}
    }
    Ok(format!("{}://{rest}", if tls { "https" } else { "http" }))
}

#[cfg(test)]
mod tests {
    use super::normalize_address;

    #[test]
    fn host_port_and_http_forms_normalise_to_the_same_uri() {
        for a in [
            "127.0.0.1:7101",
            "http://127.0.0.1:7101",
            " 127.0.0.1:7101 ",
            "http://127.0.0.1:7101/",
        ] {
            assert_eq!(normalize_address(a).unwrap(), "http://127.0.0.1:7101", "{a}");
        }
        assert_eq!(
            normalize_address("master-1.example:80").unwrap(),
            "http://master-1.example:80"
        );
        assert_eq!(normalize_address("[::1]:7101").unwrap(), "http://[::1]:7101");
    }

    #[test]
    fn with_tls_every_form_becomes_https() {
        use super::normalize_address_for;
        for a in [
            "127.0.0.1:7101",
            "http://127.0.0.1:7101",
            "https://127.0.0.1:7101/",
        ] {
            assert_eq!(
                normalize_address_for(a, true).unwrap(),
                "https://127.0.0.1:7101",
                "{a}"
            );
        }
        assert!(normalize_address_for("https://h:1/x", true).is_err());
    }

    #[test]
    fn bad_addresses_are_rejected_with_a_reason() {
        for (a, why) in [
            ("", "empty"),
            ("127.0.0.1", "port"),
            ("127.0.0.1:", "port"),
            ("127.0.0.1:0", "port"),
            ("127.0.0.1:99999", "port"),
            (":7101", "host"),
            ("https://h:1", "TLS"),
            ("grpc://h:1", "scheme"),
            ("h:1/x", "path"),
            ("::1:7101", "brackets"),
            ("a b:1", "whitespace"),
        ] {
            let err = normalize_address(a).unwrap_err();
            assert!(err.contains(why), "{a:?}: {err}");
        }
    }
}
