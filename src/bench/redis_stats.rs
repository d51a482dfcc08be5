//! Redis's own accounting of a benchmark run (`INFO commandstats` and `INFO cpu`), so a figure
//! can say where its time went: script time and Redis calls per job, and how busy Redis was.

use std::collections::HashMap;

use serde::Serialize;

use crate::queue::QueueError;

/// A snapshot of Redis's counters.
#[derive(Debug, Clone, Default)]
pub struct RedisCounters {
    /// Per command: (calls, microseconds).
    commands: HashMap<String, (u64, u64)>,
    cpu_seconds: f64,
}

/// What Redis spent on a run, per job.
#[derive(Debug, Clone, Serialize)]
pub struct RedisCost {
    /// Microseconds of script execution (EVALSHA/EVAL, commands inside included) per job.
    pub script_usec_per_job: f64,
    /// Commands the scripts ran per job.
    pub calls_per_job: f64,
    /// The commands behind `calls_per_job`, most frequent first, per job.
    pub top_calls: Vec<(String, f64)>,
    /// Redis CPU time over wall time: 1.0 is one core fully busy.
    pub cpu_share: f64,
}

fn redis_error(error: redis::RedisError) -> QueueError {
    QueueError::Redis(error.to_string())
}

/// Commands a client sends itself; everything else in commandstats ran inside a script.
fn top_level(command: &str) -> bool {
    [
        "eval", "info", "script", "client", "hello", "ping", "config", "select", "blpop",
    ]
    .iter()
    .any(|prefix| command.starts_with(prefix))
}

impl RedisCounters {
    pub async fn read(redis_url: &str) -> Result<Self, QueueError> {
        let client = redis::Client::open(redis_url).map_err(redis_error)?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(redis_error)?;
        let commandstats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let cpu: String = redis::cmd("INFO")
            .arg("cpu")
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(Self {
            commands: parse_commandstats(&commandstats),
            cpu_seconds: parse_cpu_seconds(&cpu),
        })
    }

    /// What happened between `before` and this snapshot, spread over `jobs` jobs and `seconds`.
    pub fn since(&self, before: &RedisCounters, jobs: u64, seconds: f64) -> RedisCost {
        let jobs = jobs.max(1) as f64;
        let mut script_usec = 0u64;
        let mut nested: Vec<(String, u64)> = Vec::new();
        for (command, &(calls, usec)) in &self.commands {
            let (calls_before, usec_before) =
                before.commands.get(command).copied().unwrap_or((0, 0));
            let (calls, usec) = (
                calls.saturating_sub(calls_before),
                usec.saturating_sub(usec_before),
            );
            if command.starts_with("eval") {
                script_usec += usec;
            } else if !top_level(command) && calls > 0 {
                nested.push((command.clone(), calls));
            }
        }
        nested.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let calls: u64 = nested.iter().map(|(_, calls)| calls).sum();
        RedisCost {
            script_usec_per_job: script_usec as f64 / jobs,
            calls_per_job: calls as f64 / jobs,
            top_calls: nested
                .into_iter()
                .take(10)
                .map(|(command, calls)| (command, calls as f64 / jobs))
                .collect(),
            cpu_share: (self.cpu_seconds - before.cpu_seconds).max(0.0) / seconds.max(1e-9),
        }
    }
}

/// `cmdstat_zadd:calls=12,usec=34,...` lines into command -> (calls, usec).
fn parse_commandstats(info: &str) -> HashMap<String, (u64, u64)> {
    let mut commands = HashMap::new();
    for line in info.lines() {
        let Some(rest) = line.trim().strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((command, fields)) = rest.split_once(':') else {
            continue;
        };
        let field = |name: &str| {
            fields
                .split(',')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(0)
        };
        commands.insert(command.to_string(), (field("calls"), field("usec")));
    }
    commands
}

/// `used_cpu_sys` + `used_cpu_user` from `INFO cpu`.
fn parse_cpu_seconds(info: &str) -> f64 {
    info.lines()
        .filter_map(|line| {
            let (name, value) = line.trim().split_once(':')?;
            matches!(name, "used_cpu_sys" | "used_cpu_user").then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_attributed_to_the_commands_its_scripts_ran() {
        let before = RedisCounters {
            commands: parse_commandstats(
                "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=1000,usec_per_call=100.00\r\ncmdstat_zadd:calls=5,usec=50\r\n",
            ),
            cpu_seconds: parse_cpu_seconds("used_cpu_sys:1.5\r\nused_cpu_user:2.5\r\n"),
        };
        let after = RedisCounters {
            commands: parse_commandstats(
                "cmdstat_evalsha:calls=30,usec=5000\r\ncmdstat_zadd:calls=45,usec=450\r\ncmdstat_hset:calls=20,usec=40\r\ncmdstat_info:calls=4,usec=9\r\ncmdstat_client|setinfo:calls=2,usec=1\r\n",
            ),
            cpu_seconds: parse_cpu_seconds("used_cpu_sys:2.0\r\nused_cpu_user:4.0\r\n"),
        };
        let cost = after.since(&before, 20, 4.0);
        assert_eq!(cost.script_usec_per_job, 200.0);
        assert_eq!(cost.calls_per_job, 3.0);
        assert_eq!(
            cost.top_calls,
            vec![("zadd".to_string(), 2.0), ("hset".to_string(), 1.0)]
        );
        assert_eq!(cost.cpu_share, 0.5);
    }
}
