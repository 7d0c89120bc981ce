//! NATS subjects as the stores see them: matching with wildcards, and the checks that refuse
//! what JetStream refuses, shared by every backend so they cannot drift apart.

use super::StoreRequest;

/// NATS subject matching: `*` matches one token, `>` one or more trailing tokens.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Checks a subject a message is published on (or purged or read by): not empty, no empty
/// token, no whitespace or control character, and no `*` or `>` token. JetStream reads those
/// tokens as wildcards, so a purge of `a.>` would empty every subject under `a`; the core
/// escapes the MQTT topic characters `*` and `>` (see `topic::subject`), and every store
/// refuses a literal subject with a wildcard token, so that all backends agree.
pub fn check_subject(subject: &str) -> Result<(), String> {
    check_tokens(subject, "subject")?;
    if subject.split('.').any(|t| t == "*" || t == ">") {
        return Err(format!(
            "subject {subject:?} has a wildcard token ('*' or '>') where one subject is meant"
        ));
    }
    Ok(())
}

/// Checks a consumer filter subject: a valid subject whose `>` token, if any, is the last.
pub fn check_filter(filter: &str) -> Result<(), String> {
    check_tokens(filter, "filter subject")?;
    let mut tokens = filter.split('.').peekable();
    while let Some(token) = tokens.next() {
        if token == ">" && tokens.peek().is_some() {
            return Err(format!(
                "filter subject {filter:?}: '>' must be the last token"
            ));
        }
    }
    Ok(())
}

/// Checks a durable consumer name: not empty, and none of `.`, `*`, `>`, whitespace or control
/// characters (JetStream's rule).
pub fn check_consumer_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("consumer name is empty".into());
    }
    if name
        .chars()
        .any(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "consumer name {name:?} contains '.', '*', '>', whitespace or a control character"
        ));
    }
    Ok(())
}

/// Checks a `List` prefix: empty (everything) or whole tokens ending with `.`, since JetStream
/// lists by the filter subject `<prefix>>`.
pub fn check_list_prefix(prefix: &str) -> Result<(), String> {
    match prefix.strip_suffix('.') {
        _ if prefix.is_empty() => Ok(()),
        Some(tokens) => check_tokens(tokens, "list prefix"),
        None => Err(format!(
            "list prefix {prefix:?} does not end at a token boundary ('.')"
        )),
    }
}

fn check_tokens(subject: &str, what: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if subject.split('.').any(str::is_empty) {
        return Err(format!("{what} {subject:?} has an empty token"));
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{what} {subject:?} contains whitespace or a control character"
        ));
    }
    Ok(())
}

/// Checks every subject, filter and consumer name in a request.
///
/// # Errors
///
/// What is wrong, for a [`StoreError::Rejected`](super::StoreError::Rejected).
pub fn validate(request: &StoreRequest) -> Result<(), String> {
    match request {
        StoreRequest::Publish { subject, .. }
        | StoreRequest::Purge { subject, .. }
        | StoreRequest::GetLast { subject, .. } => check_subject(subject),
        StoreRequest::List { prefix, .. } => check_list_prefix(prefix),
        StoreRequest::Delete { .. } | StoreRequest::Get { .. } => Ok(()),
        StoreRequest::UpsertConsumer { name, filters } => {
            check_consumer_name(name)?;
            filters.iter().try_for_each(|f| check_filter(f))
        }
        StoreRequest::DeleteConsumer { name } => check_consumer_name(name),
        StoreRequest::Ack { consumer, .. }
        | StoreRequest::Pending { consumer, .. }
        | StoreRequest::Release { consumer } => check_consumer_name(consumer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks() {
        assert!(check_subject("$MQTT.msgs.a").is_ok());
        assert!(
            check_subject("a.*").is_err(),
            "a wildcard is not one subject"
        );
        assert!(check_subject("a.>").is_err());
        assert!(
            check_subject("a.b*c./2A").is_ok(),
            "only whole tokens are wildcards"
        );
        assert!(check_subject("").is_err());
        assert!(check_subject("a..b").is_err());
        assert!(check_subject("a.").is_err());
        assert!(check_subject("a b").is_err());
        assert!(check_filter("a.>").is_ok());
        assert!(check_filter("a.*.c").is_ok());
        assert!(check_filter("a.>.c").is_err());
        assert!(check_filter("").is_err());
        assert!(check_consumer_name("jetmq_abc").is_ok());
        assert!(check_consumer_name("").is_err());
        assert!(check_consumer_name("a.b").is_err());
        assert!(check_consumer_name("a b").is_err());
        assert!(check_list_prefix("").is_ok());
        assert!(check_list_prefix("$MQTT.sess.").is_ok());
        assert!(check_list_prefix("$MQTT.sess").is_err());
        assert!(check_list_prefix("a..").is_err());
    }
}
