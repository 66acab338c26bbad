//! `iaasctl quota ...`: what you may hold (`/v1/quota`), and for administrators a user's
//! override (`/v1/admin/quotas/{username}`).

use iaas_core::{Quota, QuotaOverride, Usage};
use reqwest::Method;
use serde::Deserialize;

use crate::cli::{QuotaCommand, QuotaSetArgs, QuotaShowArgs};
use crate::client::{Client, decode, path_segment};
use crate::console::Console;
use crate::error::Result;
use crate::table::Table;

#[derive(Debug, Deserialize)]
struct Own {
    limits: Quota,
    usage: Usage,
}

#[derive(Debug, Deserialize)]
struct OfUser {
    username: String,
    limits: Quota,
    #[serde(rename = "override")]
    overrides: QuotaOverride,
    usage: Usage,
}

/// Runs one `quota` command.
pub(crate) async fn run(
    client: &Client,
    console: &mut Console<'_>,
    command: QuotaCommand,
) -> Result<()> {
    match command {
        QuotaCommand::Show(args) => show(client, console, args).await,
        QuotaCommand::Set(args) => set(client, console, args).await,
        QuotaCommand::Reset { username, json } => {
            let value = client.send(Method::DELETE, &admin_path(&username), &[], None).await?;
            print_user(client, console, value, json)
        }
    }
}

fn admin_path(username: &str) -> String {
    format!("/v1/admin/quotas/{}", path_segment(username))
}

async fn show(client: &Client, console: &mut Console<'_>, args: QuotaShowArgs) -> Result<()> {
    let Some(username) = args.user else {
        let value = client.send(Method::GET, "/v1/quota", &[], None).await?;
        if args.json {
            return Ok(console.print_json(&value)?);
        }
        let own: Own = decode(client.url(), value)?;
        return Ok(table(&own.limits, &own.usage, &QuotaOverride::default()).write_to(console.out)?);
    };
    let value = client.send(Method::GET, &admin_path(&username), &[], None).await?;
    print_user(client, console, value, args.json)
}

async fn set(client: &Client, console: &mut Console<'_>, args: QuotaSetArgs) -> Result<()> {
    let overrides = QuotaOverride {
        instances: args.instances,
        millicpus: args.millicpus,
        memory_mib: args.memory_mib,
        instance_millicpus: args.instance_millicpus,
        instance_memory_mib: args.instance_memory_mib,
    };
    let body = serde_json::to_value(overrides).map_err(std::io::Error::other)?;
    let value = client.send(Method::PUT, &admin_path(&args.username), &[], Some(&body)).await?;
    print_user(client, console, value, args.json)
}

fn print_user(
    client: &Client,
    console: &mut Console<'_>,
    value: serde_json::Value,
    json: bool,
) -> Result<()> {
    if json {
        return Ok(console.print_json(&value)?);
    }
    let user: OfUser = decode(client.url(), value)?;
    writeln!(console.out, "user {}", user.username)?;
    Ok(table(&user.limits, &user.usage, &user.overrides).write_to(console.out)?)
}

/// One row per limit: what it allows, what is used, and whether an administrator set it.
fn table(limits: &Quota, usage: &Usage, overrides: &QuotaOverride) -> Table {
    let mut table = Table::new(&["LIMIT", "ALLOWED", "USED", "SET BY"]);
    let set_by = |overridden: bool| if overridden { "admin" } else { "default" }.to_owned();
    let rows = [
        (
            "instances",
            u64::from(limits.instances),
            Some(u64::from(usage.instances)),
            overrides.instances.is_some(),
        ),
        ("millicpus", limits.millicpus, Some(usage.millicpus), overrides.millicpus.is_some()),
        ("memory_mib", limits.memory_mib, Some(usage.memory_mib), overrides.memory_mib.is_some()),
        (
            "instance_millicpus",
            u64::from(limits.instance_millicpus),
            None,
            overrides.instance_millicpus.is_some(),
        ),
        (
            "instance_memory_mib",
            u64::from(limits.instance_memory_mib),
            None,
            overrides.instance_memory_mib.is_some(),
        ),
    ];
    for (name, allowed, used, overridden) in rows {
        let used = used.map_or_else(|| "-".to_owned(), |used| used.to_string());
        table.row(vec![name.to_owned(), allowed.to_string(), used, set_by(overridden)]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_name_is_one_path_segment() {
        assert_eq!(admin_path("ada"), "/v1/admin/quotas/ada");
        assert_eq!(admin_path("../x y"), "/v1/admin/quotas/..%2Fx%20y");
    }

    #[test]
    fn the_table_says_what_an_admin_set() {
        let overrides = QuotaOverride { instances: Some(3), ..QuotaOverride::default() };
        let usage = Usage { instances: 2, millicpus: 500, memory_mib: 128 };
        let mut out = Vec::new();
        table(&Quota::default().with(&overrides), &usage, &overrides).write_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with("instances") && l.contains(" 3 ") && l.ends_with("admin")),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("memory_mib")
                && l.contains("8192")
                && l.contains("128")
                && l.ends_with("default")),
            "{text}"
        );
    }
}
