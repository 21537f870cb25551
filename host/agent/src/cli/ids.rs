//! Process IDs on the command line: a full ID, or a unique prefix of one (as `docker` takes).

use anyhow::bail;
use serde_json::Value;

use procwarden::client::Client;

/// Length of the IDs `ps` shows; any unique prefix works.
pub const SHORT_ID_LEN: usize = 12;
const FULL_ID_LEN: usize = 36;

/// The full ID `given` names: itself when it is a whole ID, else the one listed process whose
/// ID starts with it. Only processes the agent lists can be found by prefix.
pub async fn resolve(client: &Client, given: &str) -> anyhow::Result<String> {
    let given = given.trim();
    if given.len() == FULL_ID_LEN || given.is_empty() {
        return Ok(given.to_owned());
    }
    let list = client.list().await?;
    let ids = matching(&list, given);
    match ids.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no process ID starts with {given:?} (among those `procwarden ps -a` lists)"),
        many => bail!(
            "ID prefix {given:?} is ambiguous: it matches {}; give more characters",
            many.iter()
                .map(|id| id.chars().take(SHORT_ID_LEN).collect::<String>())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn matching(list: &Value, prefix: &str) -> Vec<String> {
    list["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_str())
        .filter(|id| id.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::matching;
    use serde_json::json;

    #[test]
    fn prefixes_match_from_the_start() {
        let list = json!({"processes": [{"id": "abc1"}, {"id": "abd2"}, {"id": "xab"}]});
        assert_eq!(matching(&list, "ab").len(), 2);
        assert_eq!(matching(&list, "abc"), ["abc1"]);
        assert!(matching(&list, "b").is_empty());
    }
}
