//! The thin API clients: `announce`, `withdraw`, `query`, `peers`, `status`, `watch`. Each
//! talks to a running node's local HTTP API and prints a table (or, for `watch`, a line per
//! change), or JSON with `--json`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use node::{Change, ChangeKind, PeerView, RecordView, Status};
use serde_json::{Value, json};

const DEFAULT_API: &str = "127.0.0.1:5170";

#[derive(clap::Args, Debug, Clone)]
pub struct ApiArg {
    /// Address of the node's API.
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_API)]
    pub api: String,
    /// Token the node's API requires, if any.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "GOSSIPDIR_API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
}

/// Announce a specialist through the node.
#[derive(clap::Args, Debug)]
pub struct AnnounceArgs {
    #[command(flatten)]
    pub api: ApiArg,
    /// Name of the specialist (unique per node).
    #[arg(long)]
    pub name: String,
    /// A capability (repeatable, at least one).
    #[arg(long = "capability", value_name = "CAP", required = true)]
    pub capabilities: Vec<String>,
    /// Where to reach the service (multiaddr or URL).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Metadata as key=value (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Lifetime of the record (refreshed by the node while it runs; listed only while the
    /// node's own record lives), e.g. 10m [default: the node's --specialist-ttl].
    #[arg(long, value_name = "DURATION", value_parser = crate::node::parse_duration)]
    pub ttl: Option<Duration>,
    /// Print the record as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Withdraw a specialist this node announced.
#[derive(clap::Args, Debug)]
pub struct WithdrawArgs {
    #[command(flatten)]
    pub api: ApiArg,
    #[arg(long)]
    pub name: String,
}

/// Find specialists having every given capability (all when none is given).
#[derive(clap::Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    pub api: ApiArg,
    #[arg(long = "capability", value_name = "CAP")]
    pub capabilities: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

/// List the peers the node knows.
#[derive(clap::Args, Debug)]
pub struct PeersArgs {
    #[command(flatten)]
    pub api: ApiArg,
    #[arg(long)]
    pub json: bool,
}

/// Follow the records the node merges, as it merges them, until interrupted.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub api: ApiArg,
    /// Only specialists having every given capability (repeatable); withdrawals always show.
    #[arg(long = "capability", value_name = "CAP")]
    pub capabilities: Vec<String>,
    /// One JSON object per line, as the API sends them.
    #[arg(long)]
    pub json: bool,
}

/// Show the node's status.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiArg,
    #[arg(long)]
    pub json: bool,
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
}

fn url(api: &ApiArg, path: &str) -> String {
    format!("http://{}{}", api.api, path)
}

/// Sends a request; returns the answer's text, or a readable error.
fn call(api: &ApiArg, request: ureq::Request, body: Option<&Value>) -> anyhow::Result<String> {
    send(api, request, body)?
        .into_string()
        .context("cannot read the API's answer")
}

/// Sends a request; turns API errors into readable ones.
fn send(
    api: &ApiArg,
    request: ureq::Request,
    body: Option<&Value>,
) -> anyhow::Result<ureq::Response> {
    let target = request.url().to_owned();
    let request = match &api.api_token {
        Some(token) => request.set("Authorization", &format!("Bearer {token}")),
        None => request,
    };
    let result = match body {
        Some(b) => request
            .set("Content-Type", "application/json")
            .send_string(&b.to_string()),
        None => request.call(),
    };
    match result {
        Ok(response) => Ok(response),
        Err(ureq::Error::Status(code, response)) => {
            let text = response.into_string().unwrap_or_default();
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    let error = v.get("error")?.as_str()?.to_owned();
                    Some(match v.get("field").and_then(|f| f.as_str()) {
                        Some(field) => format!("{field}: {error}"),
                        None => error,
                    })
                })
                .unwrap_or(text);
            bail!("the node refused ({code}): {detail}")
        }
        Err(e) => {
            bail!("cannot reach the node's API at {target}: {e} (is `gossipdir node` running?)")
        }
    }
}

fn get<T: serde::de::DeserializeOwned>(api: &ApiArg, path: &str) -> anyhow::Result<(T, String)> {
    let text = call(api, agent().get(&url(api, path)), None)?;
    let value = serde_json::from_str(&text).context("unexpected answer from the API")?;
    Ok((value, text))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn expires_in(expires_at: u64) -> String {
    let left = expires_at.saturating_sub(now_ms()) / 1000;
    format!("{left}s")
}

fn short(peer: &str) -> String {
    if peer.len() > 16 {
        format!("…{}", &peer[peer.len() - 12..])
    } else {
        peer.to_owned()
    }
}

/// Left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                s.push_str(cell);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub fn announce(args: AnnounceArgs) -> anyhow::Result<()> {
    let mut meta = BTreeMap::new();
    for kv in &args.meta {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--meta {kv:?} is not KEY=VALUE");
        };
        meta.insert(k.to_owned(), v.to_owned());
    }
    let mut body = json!({
        "name": args.name,
        "capabilities": args.capabilities,
        "meta": meta,
    });
    if let Some(e) = &args.endpoint {
        body["endpoint"] = json!(e);
    }
    if let Some(ttl) = args.ttl {
        body["ttl_secs"] = json!(ttl.as_secs().max(1));
    }
    let text = call(
        &args.api,
        agent().post(&url(&args.api, "/v1/specialists")),
        Some(&body),
    )?;
    if args.json {
        println!("{}", text.trim_end());
        return Ok(());
    }
    let record: RecordView = serde_json::from_str(&text).context("unexpected answer")?;
    println!(
        "announced {} [{}] (seq {}, expires in {}, refreshed while the node runs)",
        record.name,
        record.capabilities.join(", "),
        record.seq,
        expires_in(record.expires_at)
    );
    Ok(())
}

pub fn withdraw(args: WithdrawArgs) -> anyhow::Result<()> {
    let path = format!("/v1/specialists/{}", encode_path(&args.name));
    call(&args.api, agent().delete(&url(&args.api, &path)), None)?;
    println!("withdrew {}", args.name);
    Ok(())
}

fn encode_path(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `path`, with `?capability=…&…` when there are capabilities.
fn with_capabilities(path: &str, capabilities: &[String]) -> String {
    let query: String = capabilities
        .iter()
        .map(|c| format!("capability={}", encode_path(c)))
        .collect::<Vec<_>>()
        .join("&");
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

pub fn query(args: QueryArgs) -> anyhow::Result<()> {
    let path = with_capabilities("/v1/records", &args.capabilities);
    let (records, text): (Vec<RecordView>, String) = get(&args.api, &path)?;
    if args.json {
        println!("{}", text.trim_end());
        return Ok(());
    }
    if records.is_empty() {
        println!("no specialist found");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.capabilities.join(","),
                r.endpoint.clone().unwrap_or_else(|| "-".into()),
                short(&r.owner),
                expires_in(r.expires_at),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["NAME", "CAPABILITIES", "ENDPOINT", "OWNER", "EXPIRES"],
            &rows
        )
    );
    Ok(())
}

pub fn peers(args: PeersArgs) -> anyhow::Result<()> {
    let (peers, text): (Vec<PeerView>, String) = get(&args.api, "/v1/peers")?;
    if args.json {
        println!("{}", text.trim_end());
        return Ok(());
    }
    if peers.is_empty() {
        println!("no peers known");
        return Ok(());
    }
    let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                p.peer_id.clone(),
                yes(p.connected),
                yes(p.relayed),
                yes(p.in_directory),
                p.addrs.first().cloned().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["PEER", "CONNECTED", "RELAYED", "IN DIRECTORY", "ADDRESS"],
            &rows
        )
    );
    Ok(())
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (s, text): (Status, String) = get(&args.api, "/v1/status")?;
    if args.json {
        println!("{}", text.trim_end());
        return Ok(());
    }
    let rows = vec![
        vec!["peer id".into(), s.peer_id.clone()],
        vec!["listening on".into(), s.listen_addrs.join(" ")],
        vec!["advertised".into(), s.advertised_addrs.join(" ")],
        vec!["reachability".into(), s.nat_status.clone()],
        vec![
            "clock offset".into(),
            format!(
                "{:+} ms (median of {} peers)",
                s.clock_offset_ms, s.clock_peers
            ),
        ],
        vec![
            "connections".into(),
            format!(
                "{} direct, {} relayed",
                s.connections.direct, s.connections.relayed
            ),
        ],
        vec!["nodes".into(), s.nodes.to_string()],
        vec![
            "records".into(),
            format!("{} ({} specialists)", s.records, s.specialists),
        ],
        vec!["own specialists".into(), s.own_specialists.join(", ")],
        vec!["round".into(), s.round.to_string()],
        vec!["uptime".into(), format!("{}s", s.uptime_secs)],
    ];
    print!("{}", table(&["STATUS", ""], &rows));
    Ok(())
}

pub fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let path = with_capabilities("/v1/watch", &args.capabilities);
    // No overall timeout: the answer is a stream that lasts as long as the node runs.
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .build();
    let response = send(&args.api, agent.get(&url(&args.api, &path)), None)?;
    let lines = std::io::BufReader::new(response.into_reader()).lines();
    for line in lines {
        let line = line.context("the node's change stream broke off")?;
        if args.json {
            println!("{line}");
            continue;
        }
        let value: Value = serde_json::from_str(&line).context("unexpected line from the API")?;
        if let Some(n) = value.get("lagged") {
            println!("… {n} changes missed (this watcher fell behind)");
            continue;
        }
        let change: Change =
            serde_json::from_value(value).context("unexpected change from the API")?;
        let r = &change.record;
        match change.kind {
            ChangeKind::Specialist => println!(
                "specialist  {} [{}] {} by {} (seq {}, expires in {})",
                r.name,
                r.capabilities.join(","),
                r.endpoint.as_deref().unwrap_or("-"),
                short(&r.owner),
                r.seq,
                expires_in(r.expires_at)
            ),
            ChangeKind::Node => println!(
                "node        {} (seq {}, expires in {})",
                short(&r.owner),
                r.seq,
                expires_in(r.expires_at)
            ),
            ChangeKind::Withdrawn => {
                println!(
                    "withdrawn   {} by {} (seq {})",
                    r.name,
                    short(&r.owner),
                    r.seq
                )
            }
        }
    }
    println!("the node closed the stream (it stopped)");
    Ok(())
}
