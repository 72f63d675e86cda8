//! [`RedisConn`]: one connection type for one server and for a cluster.
//!
//! A cluster runs a pipeline on one node, so the redis crate refuses a pipeline whose keys
//! hash to different slots. Some of Tally's pipelines are cross-slot by nature: a batch's
//! side effects touch every site in the batch, a presence tick reports every topic a
//! gateway holds. On a cluster [`RedisConn`] splits such a pipeline into one pipeline per
//! slot (commands of one slot keep their order) and sends those concurrently; replies come
//! back in the original order. There is no order *between* slots, so a caller that needs
//! one step after another (a batch's side effects before its acknowledgement) sends two
//! pipelines. A `MULTI` pipeline is passed through unchanged (the server refuses it if it
//! is cross-slot).

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Arg, Cmd, Pipeline, RedisFuture, Value};

/// A multiplexed connection to one server or to a cluster; cheap to clone (clones share the
/// sockets).
#[derive(Clone)]
pub enum RedisConn {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => {
                let groups = slot_groups(pipeline);
                if pipeline.is_transaction() || groups.len() <= 1 {
                    c.req_packed_commands(pipeline, offset, count)
                } else {
                    Box::pin(run_by_slot(c, pipeline, groups))
                }
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Sends each slot's commands as a pipeline of their own, all at once, and returns every
/// command's reply in the pipeline's order (ignored replies are dropped afterwards by the
/// pipeline itself).
async fn run_by_slot(
    conn: &ClusterConnection,
    pipeline: &Pipeline,
    groups: Vec<Vec<usize>>,
) -> redis::RedisResult<Vec<Value>> {
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let sends = groups.iter().map(|group| {
        let mut part = Pipeline::with_capacity(group.len());
        for &i in group {
            part.add_command(commands[i].clone());
        }
        let mut conn = conn.clone();
        async move { conn.req_packed_commands(&part, 0, part.len()).await }
    });
    let answers = futures_util::future::join_all(sends).await;
    let mut replies: Vec<Option<Value>> = vec![None; commands.len()];
    for (group, answer) in groups.iter().zip(answers) {
        for (&i, reply) in group.iter().zip(answer?) {
            replies[i] = Some(reply);
        }
    }
    Ok(replies
        .into_iter()
        .map(|r| r.unwrap_or(Value::Nil))
        .collect())
}

/// The pipeline's command indices grouped by slot, groups in order of first appearance. A
/// command without a key (`PING`) joins the first group.
fn slot_groups(pipeline: &Pipeline) -> Vec<Vec<usize>> {
    let mut groups: Vec<(Option<Slot>, Vec<usize>)> = Vec::new();
    let mut keyless = Vec::new();
    for (i, cmd) in pipeline.cmd_iter().enumerate() {
        match command_slot(cmd) {
            None => keyless.push(i),
            Some(slot) => match groups.iter_mut().find(|(s, _)| *s == Some(slot)) {
                Some((_, group)) => group.push(i),
                None => groups.push((Some(slot), vec![i])),
            },
        }
    }
    match groups.first_mut() {
        Some((_, first)) => {
            first.extend(keyless);
            first.sort_unstable();
        }
        None if !keyless.is_empty() => groups.push((None, keyless)),
        None => {}
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// The slot of the first key of `cmd`, for the commands Tally pipelines.
fn command_slot(cmd: &Cmd) -> Option<Slot> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let numkeys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            if numkeys == 0 {
                return None;
            }
            args.get(3)?
        }
        // PUBLISH is routed by its channel, as the redis crate routes it.
        b"PING" | b"ECHO" | b"SCRIPT" | b"INFO" | b"TIME" => {
            return None;
        }
        _ => args.get(1)?,
    };
    Some(Slot::for_key(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_splits_into_one_group_per_slot_keeping_the_order_within_each() {
        let mut pipe = redis::pipe();
        pipe.cmd("INCR").arg("p:{site:a}:gen");
        pipe.cmd("PING");
        pipe.cmd("INCR").arg("p:{site:b}:gen");
        pipe.cmd("DEL").arg("p:{site:a}:cache");
        pipe.cmd("EVALSHA").arg("abc").arg(1).arg("p:{site:b}:x");
        pipe.cmd("PUBLISH").arg("p:{site:a}:gen").arg("x");
        assert_eq!(slot_groups(&pipe), vec![vec![0, 1, 3, 5], vec![2, 4]]);
    }

    #[test]
    fn a_single_slot_pipeline_is_one_group() {
        let mut pipe = redis::pipe();
        pipe.cmd("LPUSH").arg("p:{events}:dead").arg("x");
        pipe.cmd("LTRIM").arg("p:{events}:dead").arg(0).arg(9);
        pipe.cmd("DEL").arg("p:{events}:processing:w");
        assert_eq!(slot_groups(&pipe), vec![vec![0, 1, 2]]);
        assert!(slot_groups(&redis::pipe()).is_empty());
        let mut ping = redis::pipe();
        ping.cmd("PING");
        assert_eq!(slot_groups(&ping), vec![vec![0]]);
    }
}
