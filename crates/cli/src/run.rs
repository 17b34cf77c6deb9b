//! Plays a script against a cluster: `ringkv run`.
//!
//! Gets and `stats()` print to the output (stdout), one line each; the
//! redistribution log goes to `tracing` (stderr); errors are printed to
//! stderr by the caller from [`RunSummary`] and the returned error.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use ringkv_cluster::{Cluster, ClusterError, Progress};

use crate::exec::Executor;
use crate::script::{Item, ScriptError, ScriptReader};

/// How a run treats errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Report bad lines and failed operations, and go on.
    pub keep_going: bool,
    /// Show a progress bar for redistributions longer than about a second
    /// (only when stderr is a terminal).
    pub progress: bool,
    /// Flush the output after every line (for a person typing a script).
    pub flush_each: bool,
    /// Report errors on stderr as JSON objects (`{"event":"error",...}`)
    /// instead of `error: ...` lines, to match `--log-format json`.
    pub json_errors: bool,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// Operations executed (successfully or not).
    pub ops: u64,
    /// Lines that did not parse.
    pub syntax_errors: u64,
    /// Operations that failed (unknown node, last node holding data, ...).
    pub op_errors: u64,
}

impl RunSummary {
    /// 0 if all went well, 2 if any line did not parse, else 1 if any
    /// operation failed.
    pub fn exit_code(&self) -> i32 {
        if self.syntax_errors > 0 {
            2
        } else if self.op_errors > 0 {
            1
        } else {
            0
        }
    }
}

/// Why a run stopped early (without `--keep-going`) or could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A line did not parse.
    #[error("{0}")]
    Script(ScriptError),
    /// An operation failed.
    #[error("line {line}: {op}: {source}")]
    Op {
        /// Line of the operation.
        line: usize,
        /// The operation, in script syntax.
        op: String,
        /// Why it failed.
        source: ClusterError,
    },
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl RunOptions {
    /// Writes one error report to stderr, as text or as a JSON object.
    pub fn report(&self, err: &dyn std::fmt::Display, line: usize) {
        if self.json_errors {
            let obj =
                serde_json::json!({"event": "error", "line": line, "message": err.to_string()});
            eprintln!("{obj}");
        } else {
            eprintln!("error: {err}");
        }
    }
}

impl RunError {
    /// The script line the error is about (0 if none).
    pub fn line(&self) -> usize {
        match self {
            RunError::Script(e) => e.line(),
            RunError::Op { line, .. } => *line,
            RunError::Output(_) => 0,
        }
    }

    /// The process exit code for this error: 2 for a syntax error, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Script(ScriptError::Syntax(_)) => 2,
            _ => 1,
        }
    }
}

/// Plays scripts against one cluster.
pub struct Runner {
    exec: Executor,
    options: RunOptions,
}

impl Runner {
    /// A runner over `cluster`.
    pub fn new(cluster: Cluster, options: RunOptions) -> Self {
        if options.progress && std::io::stderr().is_terminal() {
            let bar = RebalanceBar::default();
            cluster.on_progress(move |p| bar.update(p));
        }
        Runner {
            exec: Executor::new(cluster),
            options,
        }
    }

    /// The cluster the script runs against.
    pub fn cluster(&self) -> &Cluster {
        self.exec.cluster()
    }

    /// Plays `script`, writing gets and stats to `out`. Returns the summary,
    /// or the error that stopped the run; either way, what came before the
    /// error has been applied and written.
    pub fn run(
        &mut self,
        script: impl BufRead,
        out: &mut impl Write,
    ) -> Result<RunSummary, RunError> {
        let mut summary = RunSummary::default();
        for item in ScriptReader::new(script) {
            let item = match item {
                Ok(item) => item,
                Err(e @ ScriptError::Io { .. }) => {
                    out.flush()?;
                    return Err(RunError::Script(e));
                }
                Err(e) => {
                    summary.syntax_errors += 1;
                    out.flush()?;
                    if !self.options.keep_going {
                        return Err(RunError::Script(e));
                    }
                    self.options.report(&e, e.line());
                    continue;
                }
            };
            match item {
                Item::Op { line, op } => {
                    summary.ops += 1;
                    match self.exec.execute(&op) {
                        Ok(Some(text)) => {
                            writeln!(out, "{text}")?;
                            if self.options.flush_each {
                                out.flush()?;
                            }
                        }
                        Ok(None) => {}
                        Err(source) => {
                            summary.op_errors += 1;
                            out.flush()?;
                            let err = RunError::Op {
                                line,
                                op: op.to_string(),
                                source,
                            };
                            if !self.options.keep_going {
                                return Err(err);
                            }
                            self.options.report(&err, line);
                        }
                    }
                }
                Item::Concurrent { lanes, .. } => {
                    let results = self.run_lanes(&lanes);
                    let mut first_error = None;
                    for lane in results {
                        for result in lane {
                            summary.ops += 1;
                            match result {
                                Ok(Some(text)) => writeln!(out, "{text}")?,
                                Ok(None) => {}
                                Err(err) => {
                                    summary.op_errors += 1;
                                    if !self.options.keep_going && first_error.is_none() {
                                        first_error = Some(err);
                                    } else {
                                        self.options.report(&err, err.line());
                                    }
                                }
                            }
                        }
                    }
                    if let Some(err) = first_error {
                        out.flush()?;
                        return Err(err);
                    }
                }
            }
        }
        out.flush()?;
        Ok(summary)
    }

    /// Runs the lanes on a bounded pool of threads (see [`crate::pool`]);
    /// returns each lane's results in lane order. Without `--keep-going` a
    /// lane stops at its first error (the other lanes run to their end).
    fn run_lanes(
        &self,
        lanes: &[crate::script::Lane],
    ) -> Vec<Vec<Result<Option<String>, RunError>>> {
        let keep_going = self.options.keep_going;
        crate::pool::run_all(lanes.len(), crate::pool::MAX_LANE_THREADS, |i| {
            let lane = &lanes[i];
            let mut results = Vec::with_capacity(lane.ops.len());
            for op in &lane.ops {
                let result = self.exec.execute(op).map_err(|source| RunError::Op {
                    line: lane.line,
                    op: op.to_string(),
                    source,
                });
                let failed = result.is_err();
                results.push(result);
                if failed && !keep_going {
                    break;
                }
            }
            results
        })
    }
}

/// A progress bar on stderr for redistributions that take over a second.
#[derive(Default)]
struct RebalanceBar {
    state: Mutex<Option<(Instant, ProgressBar)>>,
}

impl RebalanceBar {
    const DELAY: Duration = Duration::from_secs(1);

    fn update(&self, p: &Progress) {
        let mut state = self.state.lock();
        if p.ranges_done <= 1 || state.is_none() {
            let bar = ProgressBar::with_draw_target(
                Some(p.ranges_total as u64),
                ProgressDrawTarget::hidden(),
            );
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ranges, {elapsed}")
                    .expect("the template is valid")
                    .progress_chars("=> "),
            );
            bar.set_message(format!("{}({})", p.kind, p.node));
            *state = Some((Instant::now(), bar));
        }
        let (started, bar) = state.as_ref().expect("set above");
        if bar.is_hidden() && started.elapsed() >= Self::DELAY {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        bar.set_position(p.ranges_done as u64);
        if p.ranges_done >= p.ranges_total {
            bar.finish_and_clear();
            *state = None;
        }
    }
}
