//! Secrets out of logs: the one function that makes a URL fit to print.
//!
//! Why here: sink URLs, NATS URLs and broker URLs all carry credentials (`user:password@`,
//! `?token=`); every crate that logs or prints one uses this.

/// A URL fit for logs: the password of its user info and the values of query parameters
/// that carry secrets (`p`, `password`, `token`, `key`, ...) replaced by `***`.
pub fn url(url: &str) -> String {
    const SECRET: &[&str] = &[
        "p",
        "pw",
        "pass",
        "password",
        "passwd",
        "token",
        "access_token",
        "secret",
        "key",
        "apikey",
        "api_key",
        "auth",
        "sig",
        "signature",
    ];
    let Ok(mut u) = url::Url::parse(url) else {
        return "(an unparsable URL)".to_string();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let hide = SECRET.contains(&k.to_ascii_lowercase().as_str());
                (
                    k.into_owned(),
                    if hide { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_and_secret_parameters_are_hidden() {
        let r = super::url("nats://fl:hunter2@nats:4222");
        assert!(!r.contains("hunter2") && r.contains("***"), "{r}");
        let r = super::url("http://h:8086/write?db=x&token=abc");
        assert!(!r.contains("abc") && r.contains("db=x"), "{r}");
    }
}
