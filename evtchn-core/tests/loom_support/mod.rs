//! The loom driver the model-check binaries share: run a model
//! exhaustively (or to a preemption bound) and report how many
//! interleavings it explored.
#![allow(dead_code, reason = "each test binary uses a different subset")]

/// Runs `body` under loom with `preemption_bound` (`None`: exhaustively),
/// prints how many interleavings it explored and how long it took, and
/// fails if it explored only one (a model that cannot race checks nothing).
pub fn check_bounded(
    name: &str,
    preemption_bound: Option<usize>,
    body: impl Fn() + Sync + Send + 'static,
) {
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = executions.clone();
    let started = std::time::Instant::now();
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = preemption_bound;
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        body();
    });
    let executions = executions.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "loom {name}: {executions} interleavings in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(executions > 1, "loom explored a single interleaving");
}

/// [`check_bounded`] without a bound: every interleaving.
pub fn check(name: &str, body: impl Fn() + Sync + Send + 'static) {
    check_bounded(name, None, body);
}
