//! `procwarden ps` as a table.

use std::io::Write;

use serde_json::Value;

use super::ids::SHORT_ID_LEN;

/// Rows shown without `-a`.
pub const DEFAULT_ROWS: usize = 20;
/// Characters of a command shown without `-a`.
const COMMAND_WIDTH: usize = 60;

pub struct TableOptions {
    pub running_only: bool,
    pub all: bool,
    pub quiet: bool,
}

/// The processes to show, in the agent's order.
fn selected<'a>(reply: &'a Value, options: &TableOptions) -> Vec<&'a Value> {
    reply["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| !options.running_only || p["running"] == Value::Bool(true))
        .collect()
}

pub fn print(reply: &Value, options: &TableOptions, out: &mut impl Write) -> std::io::Result<()> {
    let rows = selected(reply, options);
    if options.quiet {
        for p in rows {
            writeln!(out, "{}", p["id"].as_str().unwrap_or_default())?;
        }
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let shown = if options.all {
        rows.len()
    } else {
        rows.len().min(DEFAULT_ROWS)
    };
    writeln!(
        out,
        "{:<12}  {:<9}  {:>4}  {:>6}  COMMAND",
        "ID", "STATE", "EXIT", "AGE"
    )?;
    for p in &rows[..shown] {
        let state = if p["running"] == Value::Bool(true) {
            "running"
        } else if p["group_alive"] == Value::Bool(true) {
            "lingering"
        } else {
            "exited"
        };
        let exit = p["exit_code"]
            .as_i64()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let age = now - p["started_at_unix"].as_i64().unwrap_or(now);
        let command = p["command"].as_str().unwrap_or_default().replace('\n', " ");
        let command = if options.all {
            command
        } else {
            cut(&command, COMMAND_WIDTH)
        };
        let id: String = p["id"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(SHORT_ID_LEN)
            .collect();
        writeln!(out, "{id:<12}  {state:<9}  {exit:>4}  {age:>5}s  {command}")?;
    }
    if shown < rows.len() {
        writeln!(
            out,
            "... {} more (procwarden ps -a shows them)",
            rows.len() - shown
        )?;
    }
    // Processes the agent did not list at all (its `list_cap`); with --running the total,
    // which counts exited ones too, says nothing about running ones.
    let listed = reply["processes"].as_array().map_or(0, Vec::len);
    let total = reply["total"]
        .as_u64()
        .map_or(listed, |t| usize::try_from(t).unwrap_or(usize::MAX));
    if total > listed && !options.running_only {
        writeln!(
            out,
            "... {} more not listed by the agent (its list_cap is {listed})",
            total - listed
        )?;
    }
    Ok(())
}

/// `text` in at most `width` characters, the last one an ellipsis when it was cut.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(reply: &Value, options: &TableOptions) -> String {
        let mut out = Vec::new();
        print(reply, options, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn long_commands_are_cut_with_an_ellipsis_and_rows_are_capped() {
        let long = "x".repeat(100);
        let processes: Vec<Value> = (0..25)
            .map(|i| {
                json!({"id": format!("{i:012}-rest"), "command": long, "running": i % 2 == 0,
                "group_alive": false, "started_at_unix": 0})
            })
            .collect();
        let reply = json!({ "processes": processes });
        let plain = TableOptions {
            running_only: false,
            all: false,
            quiet: false,
        };
        let text = render(&reply, &plain);
        assert!(text.contains(&format!("{}…", "x".repeat(59))), "{text}");
        assert!(
            text.ends_with("... 5 more (procwarden ps -a shows them)\n"),
            "{text}"
        );
        let all = TableOptions { all: true, ..plain };
        let text = render(&reply, &all);
        assert!(text.contains(&long) && !text.contains("more"), "{text}");
        let running = TableOptions {
            running_only: true,
            quiet: true,
            all: false,
        };
        assert_eq!(render(&reply, &running).lines().count(), 13);
    }

    /// `n` finished processes as the list reply has them.
    fn finished_rows(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| {
                json!({"id": format!("{i:012}-rest"), "command": "true", "running": false,
                "group_alive": false, "started_at_unix": 0})
            })
            .collect()
    }

    /// `ps` with no option.
    fn plain_table() -> TableOptions {
        TableOptions {
            running_only: false,
            all: false,
            quiet: false,
        }
    }

    #[test]
    fn processes_past_the_agents_cap_are_counted() {
        let processes = finished_rows(3);
        let options = plain_table();
        let text = render(&json!({ "processes": processes, "total": 7 }), &options);
        assert!(
            text.ends_with("... 4 more not listed by the agent (its list_cap is 3)\n"),
            "{text}"
        );
        let text = render(&json!({ "processes": processes, "total": 3 }), &options);
        assert!(!text.contains("more"), "{text}");
    }

    /// `-a` shows the rows the agent listed, never those past its `list_cap`: the two
    /// hints say so apart.
    #[test]
    fn rows_past_the_table_and_past_the_cap_are_told_apart() {
        let processes = finished_rows(25);
        let options = plain_table();
        let text = render(&json!({ "processes": processes, "total": 30 }), &options);
        assert!(
            text.ends_with(
                "... 5 more (procwarden ps -a shows them)\n\
                 ... 5 more not listed by the agent (its list_cap is 25)\n"
            ),
            "{text}"
        );
        let all = TableOptions {
            all: true,
            ..options
        };
        let text = render(&json!({ "processes": processes, "total": 30 }), &all);
        assert!(
            text.ends_with("\n... 5 more not listed by the agent (its list_cap is 25)\n"),
            "{text}"
        );
        assert!(!text.contains("ps -a"), "{text}");
    }
}
