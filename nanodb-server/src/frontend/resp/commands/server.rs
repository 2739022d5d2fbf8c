//! Server commands: INFO, COMMAND, CONFIG (including run-time keyspace notifications), TIME,
//! and replication's: ROLE, REPLICAOF / SLAVEOF, WAIT (over the cluster, see `cluster::replica`).

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use super::connection::REDIS_COMPAT_VERSION;
use super::{COMMANDS, Flow, Outcome, Reject, Session, Spec, glob_match, is, lookup};
use crate::frontend::Context;
use crate::frontend::resp::encode;
use crate::stats::{Protocol, resident_memory_bytes};

const DONE: Outcome = Ok(Flow::Continue);

/// INFO [section ...]: server, clients, memory, stats and keyspace, in Redis's `key:value` format
/// (GUIs and exporters parse it). Unknown sections are empty, as in Redis.
pub fn info(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let wants = |s: &str| {
        args.len() == 1
            || args[1..].iter().any(|a| is(a, s) || is(a, "all") || is(a, "everything") || is(a, "default"))
    };
    let stats = &ctx.stats;
    let mut text = String::new();
    if wants("server") {
        let up = stats.uptime().as_secs();
        let port = session_port(ctx);
        let _ = write!(
            text,
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nnanodb_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{port}\r\nuptime_in_seconds:{up}\r\nuptime_in_days:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            up / 86_400,
        );
    }
    if wants("clients") {
        let _ = write!(
            text,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\r\n",
            stats.connections(Protocol::Resp).max(0),
            ctx.config.max_connections,
        );
    }
    if wants("memory") {
        // `used_memory` is the dataset as the engine accounts it (what maxmemory bounds: see
        // `engine::memory`), `used_memory_rss` the process's resident size.
        let rss = resident_memory_bytes().unwrap_or(0);
        let used = ctx.engine.used_memory();
        let memory = ctx.engine.memory();
        let _ = write!(
            text,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{:.2}M\r\nused_memory_rss:{rss}\r\nmaxmemory:{}\r\nmaxmemory_human:{:.2}M\r\nmaxmemory_policy:{}\r\n\r\n",
            used as f64 / (1024.0 * 1024.0),
            memory.max(),
            memory.max() as f64 / (1024.0 * 1024.0),
            memory.policy(),
        );
    }
    if wants("stats") {
        let total: u64 = Protocol::ALL.iter().map(|p| stats.connections_total(*p)).sum();
        let ops: u64 = Protocol::ALL.iter().map(|p| stats.ops(*p)).sum();
        let _ = write!(
            text,
            "# Stats\r\ntotal_connections_received:{total}\r\ntotal_commands_processed:{ops}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\ntotal_error_replies:{}\r\n\r\n",
            ctx.engine.stats().expired_keys.load(std::sync::atomic::Ordering::Relaxed),
            ctx.engine.memory().evicted(),
            ctx.feed.channels(None).len(),
            ctx.feed.pattern_count(),
            stats.errors(Protocol::Resp),
        );
    }
    if wants("replication") {
        replication_section(ctx, &mut text);
    }
    if wants("keyspace") {
        text.push_str("# Keyspace\r\n");
        let keys = ctx.engine.key_count();
        if keys > 0 {
            let _ = write!(text, "db0:keys={keys},expires={},avg_ttl=0\r\n", ctx.engine.expiring_count());
        }
        text.push_str("\r\n");
    }
    let text = text.trim_end_matches("\r\n").to_string() + "\r\n";
    encode::bulk(out, text.as_bytes());
    DONE
}

/// The cluster's status, from this synchronous handler: the RESP event loops are multi-thread
/// runtimes, so this thread may block while its other connections move to another worker.
fn cluster_status(ctx: &Context) -> Option<crate::cluster::status::Status> {
    let cluster = ctx.cluster.as_ref()?;
    let handle = tokio::runtime::Handle::current();
    Some(tokio::task::block_in_place(|| handle.block_on(cluster.status())))
}

/// `HOST`, `PORT` of an address (`""`, `0` when unknown).
fn host_port(addr: Option<&str>) -> (&str, i64) {
    addr.and_then(|a| a.rsplit_once(':')).map_or(("", 0), |(h, p)| (h, p.parse().unwrap_or(0)))
}

/// INFO's `# Replication` in Redis's shape: the leader is `master` and lists the others as
/// `slaveN` with their matched index as offset; a follower is `slave` of the leader's RESP
/// address. A single node is a master without replicas.
fn replication_section(ctx: &Context, text: &mut String) {
    text.push_str("# Replication\r\n");
    let Some(s) = cluster_status(ctx) else {
        text.push_str("role:master\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n\r\n");
        return;
    };
    // What a node that `REPLICAOF`s this one needs (Redis clients skip fields they do not know).
    if let Some(c) = &ctx.cluster {
        let _ = write!(
            text,
            "nanodb_node_id:{}\r\nnanodb_raft_addr:{}\r\nnanodb_cluster_id:{}\r\n",
            c.node_id(),
            c.advertised_raft_addr(),
            c.cluster_id().unwrap_or_default()
        );
    }
    // A node serving alone, not yet initialized, is a master without replicas.
    if s.role == "leader" || s.members.is_empty() {
        let others: Vec<_> = s.members.iter().filter(|m| m.id != s.node_id).collect();
        let _ = write!(text, "role:master\r\nconnected_slaves:{}\r\n", others.len());
        for (i, m) in others.iter().enumerate() {
            let (host, port) = host_port(m.resp_addr.as_deref());
            let offset = m.matched_index.unwrap_or(0);
            let state = if m.matched_index.is_some() { "online" } else { "wait_bgsave" };
            let _ = write!(text, "slave{i}:ip={host},port={port},state={state},offset={offset},lag=0\r\n");
        }
        let _ = write!(text, "master_repl_offset:{}\r\n\r\n", s.commit_index);
    } else {
        let leader = s.members.iter().find(|m| Some(m.id) == s.leader_id);
        let (host, port) = host_port(leader.and_then(|m| m.resp_addr.as_deref()));
        let link = if leader.is_some() { "up" } else { "down" };
        let _ = write!(
            text,
            "role:slave\r\nmaster_host:{host}\r\nmaster_port:{port}\r\nmaster_link_status:{link}\r\nslave_repl_offset:{}\r\nslave_read_only:0\r\nconnected_slaves:0\r\nmaster_repl_offset:{}\r\n\r\n",
            s.applied_index, s.commit_index
        );
    }
}

/// ROLE, in Redis's shape: `master` (the leader, or a single node) with its offset and
/// `[host, port, offset]` per other member; `slave` (every other cluster node) with the leader's
/// RESP host and port, `connected` (or `connect` while there is no leader) and its offset.
pub fn role(ctx: &Context, _: &mut Session<'_>, _: &[Bytes], out: &mut BytesMut) -> Outcome {
    let Some(s) = cluster_status(ctx) else {
        encode::array(out, 3);
        encode::bulk(out, b"master");
        encode::int(out, 0);
        encode::array(out, 0);
        return DONE;
    };
    if s.role == "leader" || s.members.is_empty() {
        let others: Vec<_> = s.members.iter().filter(|m| m.id != s.node_id).collect();
        encode::array(out, 3);
        encode::bulk(out, b"master");
        encode::int(out, s.commit_index as i64);
        encode::array(out, others.len());
        for m in others {
            let (host, port) = host_port(m.resp_addr.as_deref());
            encode::array(out, 3);
            encode::bulk(out, host.as_bytes());
            encode::bulk(out, port.to_string().as_bytes());
            encode::bulk(out, m.matched_index.unwrap_or(0).to_string().as_bytes());
        }
    } else {
        let leader = s.members.iter().find(|m| Some(m.id) == s.leader_id);
        let (host, port) = host_port(leader.and_then(|m| m.resp_addr.as_deref()));
        encode::array(out, 5);
        encode::bulk(out, b"slave");
        encode::bulk(out, host.as_bytes());
        encode::int(out, port);
        encode::bulk(out, if leader.is_some() { b"connected" } else { b"connect" });
        encode::int(out, s.applied_index as i64);
    }
    DONE
}

/// REPLICAOF host port | REPLICAOF NO ONE (and SLAVEOF): see `cluster::replica`. Admin-only;
/// a node without `--raft-addr` cannot join anything and says which flags it needs.
pub fn replicaof(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    ctx.authorize(&session.caller, crate::auth::Need::Admin("replicaof"))?;
    let Some(cluster) = &ctx.cluster else {
        return Err(Reject::Msg(
            "ERR REPLICAOF needs cluster mode: start this node with --node-id N and --raft-addr HOST:PORT (and no \
             --cluster-peers, to serve alone until REPLICAOF)"
                .into(),
        ));
    };
    let handle = tokio::runtime::Handle::current();
    let answer = if is(&args[1], "NO") && is(&args[2], "ONE") {
        tokio::task::block_in_place(|| handle.block_on(cluster.leave()))
    } else {
        let host =
            std::str::from_utf8(&args[1]).map_err(|_| Reject::Msg("ERR Invalid master host".into()))?;
        let port = std::str::from_utf8(&args[2])
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| Reject::Msg("ERR Invalid master port".into()))?;
        tokio::task::block_in_place(|| handle.block_on(cluster.replicate(host, port)))
    };
    match answer {
        Ok(text) => encode::simple(out, text),
        Err(e) => return Err(Reject::Msg(e)),
    }
    DONE
}

/// WAIT numreplicas timeout: how many other members (followers and learners) hold this
/// connection's last write, waiting up to `timeout` ms for `numreplicas` of them (0: until the
/// request deadline). A single node has no replicas: 0 at once.
pub fn wait(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let want = super::int_arg(&args[1])?;
    let timeout = super::int_arg(&args[2])?;
    if timeout < 0 {
        return Err(Reject::Msg("ERR timeout is negative".into()));
    }
    let Some(cluster) = &ctx.cluster else {
        encode::int(out, 0);
        return DONE;
    };
    let handle = tokio::runtime::Handle::current();
    let index = session.last_write;
    let want = usize::try_from(want).unwrap_or(0);
    let timeout = std::time::Duration::from_millis(timeout as u64);
    let n = tokio::task::block_in_place(|| handle.block_on(cluster.wait_replicas(index, want, timeout)));
    encode::int(out, n as i64);
    DONE
}

fn session_port(ctx: &Context) -> String {
    ctx.config.resp_addr.as_option().and_then(|a| a.rsplit_once(':')).map_or("0", |(_, p)| p).to_string()
}

/// One COMMAND INFO entry in Redis 7's 10-element shape.
fn command_entry(out: &mut BytesMut, s: &Spec) {
    encode::array(out, 10);
    encode::bulk(out, s.name.as_bytes());
    encode::int(out, s.arity);
    encode::array(out, s.flags.len());
    s.flags.iter().for_each(|f| encode::simple(out, f));
    encode::int(out, s.keys.0);
    encode::int(out, s.keys.1);
    encode::int(out, s.keys.2);
    encode::array(out, 0); // ACL categories
    encode::array(out, 0); // tips
    encode::array(out, 0); // key specs
    encode::array(out, 0); // subcommands
}

/// COMMAND, COMMAND COUNT, COMMAND INFO name..., COMMAND DOCS [name...] (docs are empty maps, which
/// redis-cli accepts and then uses its built-in hints), COMMAND LIST.
pub fn command(_: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let Some(sub) = args.get(1) else {
        encode::array(out, COMMANDS.len());
        COMMANDS.iter().for_each(|s| command_entry(out, s));
        return DONE;
    };
    let names = &args[2..];
    if is(sub, "COUNT") && names.is_empty() {
        encode::int(out, COMMANDS.len() as i64);
    } else if is(sub, "INFO") {
        if names.is_empty() {
            encode::array(out, COMMANDS.len());
            COMMANDS.iter().for_each(|s| command_entry(out, s));
        } else {
            encode::array(out, names.len());
            for n in names {
                match lookup(n) {
                    Some(s) => command_entry(out, s),
                    None => encode::null_array(out),
                }
            }
        }
    } else if is(sub, "DOCS") {
        encode::array(out, 0);
    } else if is(sub, "LIST") {
        encode::array(out, COMMANDS.len());
        COMMANDS.iter().for_each(|s| encode::bulk(out, s.name.as_bytes()));
    } else {
        return Err(unknown_sub(sub, "COMMAND"));
    }
    DONE
}

fn unknown_sub(sub: &[u8], cmd: &str) -> Reject {
    Reject::Msg(format!("ERR unknown subcommand '{}'. Try {cmd} HELP.", String::from_utf8_lossy(sub)))
}

/// CONFIG GET pattern...: the settings clients and redis-benchmark ask about, with NanoDB's
/// answers; CONFIG SET changes `notify-keyspace-events`, `maxmemory` and `maxmemory-policy`
/// (until restart), and `masteruser` and `masterauth` in
/// cluster mode (what `REPLICAOF` authenticates with; CONFIG GET masks the password), and refuses
/// the rest as Redis refuses immutable or unknown ones; CONFIG RESETSTAT is accepted.
pub fn config(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    ctx.authorize(&session.caller, crate::auth::Need::Admin("config"))?;
    let sub = &args[1];
    if is(sub, "GET") && args.len() >= 3 {
        let max_clients = ctx.config.max_connections.to_string();
        let bulk = ctx.config.resp_max_bulk_len.to_string();
        let port = session_port(ctx);
        let notify = ctx.feed.notify_flags().to_string();
        // Redis's names fit: `appendonly` is whether writes go to the log, `appendfsync` its fsync
        // policy (always, everysec, no: the same three words).
        let appendonly = if ctx.config.persistence { "yes" } else { "no" };
        let fsync = ctx.config.fsync.to_string();
        // Who REPLICAOF authenticates as; the password itself is never shown (see
        // `cluster::upstream`).
        let upstream = ctx.cluster.as_ref().map(|c| &c.upstream);
        let master_user = upstream.map(|u| u.shown_user()).unwrap_or_default();
        let master_auth = upstream.map_or("", |u| u.shown_pass());
        let max_memory = ctx.engine.memory().max().to_string();
        let policy = ctx.engine.memory().policy();
        let settings: [(&str, &str); 15] = [
            ("save", ""),
            ("appendonly", appendonly),
            ("appendfsync", &fsync),
            ("databases", "1"),
            (MAXMEMORY, &max_memory),
            (MAXMEMORY_POLICY, policy.as_str()),
            ("maxclients", &max_clients),
            ("timeout", "0"),
            ("port", &port),
            ("proto-max-bulk-len", &bulk),
            ("bind", "127.0.0.1"),
            ("cluster-enabled", "no"),
            (NOTIFY, &notify),
            (MASTERUSER, &master_user),
            (MASTERAUTH, master_auth),
        ];
        let found: Vec<_> = settings
            .iter()
            .filter(|(k, _)| args[2..].iter().any(|p| glob_match(&p.to_ascii_lowercase(), k.as_bytes())))
            .collect();
        encode::array(out, found.len() * 2);
        for (k, v) in found {
            encode::bulk(out, k.as_bytes());
            encode::bulk(out, v.as_bytes());
        }
    } else if is(sub, "SET") {
        config_set(ctx, &args[2..])?;
        encode::ok(out);
    } else if is(sub, "RESETSTAT") {
        encode::ok(out);
    } else {
        return Err(unknown_sub(sub, "CONFIG"));
    }
    DONE
}

/// The keyspace-notification setting's name.
const NOTIFY: &str = "notify-keyspace-events";
/// Who `REPLICAOF` authenticates as on its target (Redis's name).
const MASTERUSER: &str = "masteruser";
/// The password `REPLICAOF` authenticates with (Redis's name); CONFIG GET shows a mask.
const MASTERAUTH: &str = "masterauth";
/// `--max-memory` (Redis's name and syntax: `100mb` is 100 MiB).
const MAXMEMORY: &str = "maxmemory";
/// `--maxmemory-policy`.
const MAXMEMORY_POLICY: &str = "maxmemory-policy";

/// Settings CONFIG GET shows that are fixed while running (they are flags).
const IMMUTABLE: &[&str] = &[
    "save",
    "appendonly",
    "appendfsync",
    "databases",
    "maxclients",
    "timeout",
    "port",
    "proto-max-bulk-len",
    "bind",
    "cluster-enabled",
];

/// CONFIG SET name value [name value ...]: every pair is checked before any is applied, as Redis
/// does, so a bad pair changes nothing.
fn config_set(ctx: &Context, pairs: &[Bytes]) -> Result<(), Reject> {
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(Reject::Msg("ERR wrong number of arguments for 'config|set' command".into()));
    }
    let failed = |name: &str, why: &str| {
        Reject::Msg(format!("ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"))
    };
    let mut notify = None;
    let (mut master_user, mut master_auth) = (None, None);
    let (mut max_memory, mut policy) = (None, None);
    for pair in pairs.chunks_exact(2) {
        let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
        if name == MASTERUSER || name == MASTERAUTH {
            if ctx.cluster.is_none() {
                return Err(failed(
                    &name,
                    "REPLICAOF needs cluster mode (--node-id and --raft-addr), so this node has no master to \
                     authenticate to",
                ));
            }
            let value = std::str::from_utf8(&pair[1])
                .map_err(|_| failed(&name, "the value is not UTF-8"))?
                .to_string();
            if name == MASTERUSER {
                master_user = Some(value);
            } else {
                master_auth = Some(value);
            }
        } else if name == MAXMEMORY {
            let value = std::str::from_utf8(&pair[1]).unwrap_or_default();
            let bytes = crate::engine::memory::parse_redis_memory(value)
                .map_err(|_| failed(&name, "argument must be a memory value"))?;
            max_memory = Some(bytes);
        } else if name == MAXMEMORY_POLICY {
            let value = std::str::from_utf8(&pair[1]).unwrap_or_default();
            let chosen: crate::engine::Policy =
                value.parse().map_err(|_| failed(&name, "argument(s) must be one of the following: noeviction, allkeys-lru, allkeys-random, volatile-lru, volatile-ttl, volatile-random"))?;
            if ctx.cluster.is_some() && chosen != crate::engine::Policy::NoEviction {
                return Err(failed(
                    &name,
                    "only noeviction in cluster mode: an eviction is one node's decision and every node must \
                     apply the same log",
                ));
            }
            policy = Some(chosen);
        } else if name == NOTIFY {
            let flags = std::str::from_utf8(&pair[1])
                .ok()
                .and_then(|v| crate::feed::NotifyFlags::parse(v).ok())
                .ok_or_else(|| failed(NOTIFY, "Invalid event class character. Use 'Ag$lshzxeKEtmdn'."))?;
            notify = Some(flags);
        } else if IMMUTABLE.contains(&name.as_str()) {
            return Err(failed(&name, "can't set immutable config"));
        } else {
            return Err(Reject::Msg(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                String::from_utf8_lossy(&pair[0])
            )));
        }
    }
    if max_memory.is_some() || policy.is_some() {
        let memory = ctx.engine.memory();
        let (max, policy) = (max_memory.unwrap_or(memory.max()), policy.unwrap_or(memory.policy()));
        // Refused (cluster mode with an evicting policy) before anything else is applied.
        ctx.engine.set_memory_limit(max, policy).map_err(|why| failed(MAXMEMORY_POLICY, &why))?;
    }
    if let Some(flags) = notify {
        ctx.feed.set_notify_flags(flags);
    }
    if let Some(upstream) = ctx.cluster.as_ref().map(|c| &c.upstream) {
        if let Some(user) = master_user {
            upstream.set_user(&user);
        }
        if let Some(pass) = master_auth {
            upstream.set_pass(&pass);
        }
    }
    Ok(())
}

/// TIME: the engine clock (the one TTLs use) as seconds and microseconds.
pub fn time(ctx: &Context, _: &mut Session<'_>, _: &[Bytes], out: &mut BytesMut) -> Outcome {
    let ms = ctx.engine.clock().now_ms();
    let mut secs = BytesMut::new();
    encode::decimal(&mut secs, (ms / 1000) as i64);
    let mut micros = BytesMut::new();
    encode::decimal(&mut micros, ((ms % 1000) * 1000) as i64);
    encode::array(out, 2);
    encode::bulk(out, &secs);
    encode::bulk(out, &micros);
    DONE
}
